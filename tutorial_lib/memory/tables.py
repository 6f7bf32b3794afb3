"""Tables built on the estimator: bigger models, precisions, GPU counts and sharding, Accelerate's
figures, the estimate against measured peaks, and where a method's trained weights sit."""

from __future__ import annotations

import torch

from tutorial_lib.memory.estimator import TrainingSetup, _as_architecture, estimate
from tutorial_lib.memory.measure import count_params, logical_numel
from tutorial_lib.memory.shapes import ARCHITECTURES

RECIPES = {  # how full fine-tuning stores what it trains -> the weights' dtype for `estimate`
    "fp32": "fp32",  # weights 4 + gradients 4 + AdamW 8 = 16 bytes a parameter
    "bf16 mixed, fp32 master": "bf16",  # 2 + 2 + (fp32 master copy 4 + AdamW 8) = 16
}


def scaling_table(batch: int = 8, seq_len: int = 128, architectures: dict | None = None):
    """Full fine-tuning with AdamW, in GiB, for each known architecture and recipe (`RECIPES`):
    the arithmetic behind "why fine-tuning a 7B model needs a big GPU". Mixed precision keeps an
    fp32 master copy, so both recipes hold 16 bytes a parameter before activations."""
    import pandas as pd

    rows = []
    for arch in (architectures or ARCHITECTURES).values():
        for recipe, dtype in RECIPES.items():
            est = estimate(arch, method="full", dtype=dtype, batch=batch, seq_len=seq_len)
            states = est.weights + est.gradients + est.optimizer
            rows.append(
                {
                    "model": arch.name,
                    "recipe": recipe,
                    "params (B)": round(arch.n_params / 1e9, 3),
                    "states (B/param)": round(states / arch.n_params, 1),
                    **{f"{k} (GiB)": round(v / 2**30, 1) for k, v in est.rows()},
                }
            )
    return pd.DataFrame(rows).set_index(["model", "recipe"])


EXTRAPOLATION_MODELS = {
    "1B": "Llama-3.2-1B",
    "7B": "Llama-2-7B",
    "13B": "Llama-2-13B",
    "70B": "Llama-2-70B",
}
EXTRAPOLATION_METHODS = {  # how each is usually run on a GPU
    "full": dict(method="full", dtype="bf16"),  # mixed precision: 16 bytes a parameter
    "LoRA": dict(method="lora", dtype="bf16"),
    "QLoRA": dict(method="qlora"),
}


def extrapolation_table(
    gpu_gib: tuple[float, ...] = (16, 24, 48, 80),
    gpus: tuple[int, ...] = (1, 2, 8),
    sharding: str = "fsdp",
    wide: bool = True,
    **knobs,
):
    """Which model sizes each method can train on which GPUs: GiB to spare per device (negative:
    does not fit), sharding over several GPUs. `knobs` go to `TrainingSetup` (defaults: batch 1
    of 512 tokens, gradient checkpointing, LoRA rank 16). `wide=False`: one row per case."""
    import pandas as pd

    knobs = {"batch": 1, "seq_len": 512, "gradient_checkpointing": True, "rank": 16, **knobs}
    rows = []
    for size, arch in EXTRAPOLATION_MODELS.items():
        for label, method in EXTRAPOLATION_METHODS.items():
            for n in gpus:
                est = estimate(
                    arch, gpus=n, sharding="none" if n == 1 else sharding, **method, **knobs
                )
                for memory in gpu_gib:
                    rows.append(
                        {
                            "model": size,
                            "method": label,
                            "GPUs": n,
                            "per GPU (GiB)": round(est.total / 2**30, 1),
                            "GPU (GiB)": memory,
                            "fits": est.fits(memory),
                            "margin (GiB)": round(est.margin(memory), 1),
                        }
                    )
    table = pd.DataFrame(rows)
    if not wide:
        return table.set_index(["model", "method", "GPUs", "GPU (GiB)"])
    grid = table.pivot_table(
        index=["model", "method", "GPUs", "per GPU (GiB)"],
        columns="GPU (GiB)",
        values="margin (GiB)",
        sort=False,
    )
    grid.columns = [f"{c:g} GiB" for c in grid.columns]
    return grid


def _layer_free(name: str) -> str:
    """A parameter's name with its layer index and wrapper prefixes dropped, so the same
    weight in every block shares one row: "model.layers.3.mlp.adapter.up.weight" ->
    "layers.*.mlp.adapter.up.weight"."""
    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return ".".join(["layers", "*", *parts[i + 2 :]])
    return ".".join(parts[-3:])


def trainable_where(model: torch.nn.Module) -> dict[str, int]:
    """Where a method's trainable parameters sit: count per kind of weight, every block summed."""
    where: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = _layer_free(name)
            where[key] = where.get(key, 0) + logical_numel(p)
    return where


def trainable_table(models: dict[str, torch.nn.Module]):
    """One row per method: trainable parameters, their share, and where they sit."""
    import pandas as pd

    rows = []
    for name, model in models.items():
        trainable, total = count_params(model)
        where = trainable_where(model)
        rows.append(
            {
                "method": name,
                "trainable params": trainable,
                "trainable %": round(100 * trainable / total, 4),
                "where (params)": ", ".join(f"{k} ({v:,})" for k, v in where.items()),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def sharding_table(
    model="Llama-2-7B",
    layouts: tuple[tuple[int, str], ...] = (
        (1, "none"),
        (2, "ddp"),
        (2, "fsdp"),
        (8, "ddp"),
        (8, "fsdp"),
    ),
    **knobs,
):
    """GiB per device of each part, for each (GPUs, sharding) layout of the same training setup
    (`knobs` as for `estimate`): what one machine more, or sharding, changes."""
    import pandas as pd

    rows = []
    for gpus, sharding in layouts:
        est = estimate(model, gpus=gpus, sharding=sharding, **knobs)
        parts = {part: n / 2**30 for part, n in est.rows()}
        rows.append({"GPUs": gpus, "sharding": sharding} | parts)
    return pd.DataFrame(rows).set_index(["GPUs", "sharding"]).round(2)


def accelerate_figures(model, mixed_precision: str = "float32") -> dict[str, int]:
    """What `accelerate estimate-memory` says for full fine-tuning with Adam (its
    `estimate_training_usage`, fed this model's fp32 bytes): weights, gradients, optimizer
    state, and its peak ("step"). It has no activations and no notion of adapters."""
    from accelerate.commands.estimate import estimate_training_usage

    n, _, _ = _as_architecture(model)
    return estimate_training_usage(4 * n, mixed_precision)


VALIDATED_WITHIN = 25  # %: every method's estimate against its measured peak on SmolLM2-135M at
#   batch 4 and 8 (benchmarks/results/memory-estimate.json); the worst, full fine-tuning, +24 %


def validation_table(runs: list[dict]):
    """Measured against estimated training memory (beyond the loaded weights), one row per
    method and batch size, from `benchmarks/memory_estimate.py`'s runs on SmolLM2-135M; the estimate is
    recomputed here from each run's recorded setup, so the table shows today's estimator."""
    import pandas as pd

    rows = []
    for run in runs:
        if "error" in run:
            continue
        est = estimate("SmolLM2-135M", TrainingSetup(**run["setup"]))
        rows.append(
            {
                "method": run["method"],
                "batch": run["batch"],
                "estimated as": run["setup"]["method"],
                "measured (MiB)": run["measured"] / 2**20,
                "estimated (MiB)": est.beyond_weights / 2**20,
                "error (%)": 100 * (est.beyond_weights / run["measured"] - 1),
            }
        )
    return pd.DataFrame(rows).set_index(["method", "batch"]).round(1)


def accelerate_table(model="SmolLM2-135M", batch: int = 8, seq_len: int = 128):
    """Full fine-tuning with AdamW in fp32 and in mixed bf16, by this estimator and by
    `accelerate estimate-memory`'s arithmetic (GiB): where both apply, and where they part."""
    import pandas as pd

    rows = []
    for label, dtype, precision in (
        ("fp32", "fp32", "float32"),
        ("bf16 mixed", "bf16", "bfloat16"),
    ):
        ours = estimate(model, method="full", dtype=dtype, batch=batch, seq_len=seq_len)
        theirs = accelerate_figures(model, precision)
        for part, key in (
            ("weights", "model"),
            ("gradients", "gradients"),
            ("optimizer", "optimizer"),
        ):
            rows.append(
                {
                    "precision": label,
                    "part": part,
                    "ours": getattr(ours, part) / 2**30,
                    "accelerate": theirs[key] / 2**30,
                }
            )
        rows.append(
            {"precision": label, "part": "activations", "ours": ours.activations / 2**30}
            | {"accelerate": None}
        )
        peak = max(theirs["step"], theirs["model"] + theirs["gradients"] + theirs["optimizer"])
        rows.append(
            {
                "precision": label,
                "part": "total",
                "ours": ours.total / 2**30,
                "accelerate": peak / 2**30,
            }
        )
    return pd.DataFrame(rows).set_index(["precision", "part"]).round(3)
