"""Low-rank arithmetic for lesson 05: what LoRA trains, what rank an update really has, merging.

Parameter counts work on a loaded model or on a shape only (`memory.Architecture`, for models
too big to load here), with the estimator's arithmetic; the spectrum helpers take any
update ΔW, full fine-tuning's W_after − W_before or LoRA's scaled B·A alike.
"""

from __future__ import annotations

import torch
from torch import nn

from tutorial_lib import plots

# LoRA's arithmetic lives with the estimator (`memory.shapes`), so lesson 05's counts and
# `memory.estimate` are one computation; ATTENTION, MLP, TARGET_SETS and target_names stay
# reachable here for the lesson.
from tutorial_lib.memory import (  # noqa: F401
    ATTENTION,
    MLP,
    TARGET_SETS,
    Architecture,
    lora_params_per_matrix,
    target_names,
)
from tutorial_lib.methods.lora import LoraLinear, is_target
from tutorial_lib.units import mib

# --- parameter arithmetic -----------------------------------------------------------------------


def block_linear_shapes(arch: Architecture) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of each linear layer of one llama-style block, by module name."""
    return arch.block_linears()


def lora_trainable(
    model_or_arch: nn.Module | Architecture, r: int, targets: str | list[str] = "all-linear"
) -> int:
    """LoRA's trainable parameters at rank r, of a loaded model or an architecture: the count
    `memory.estimate` makes (`Architecture.lora_params`), from the model's shape."""
    arch = model_or_arch
    if not isinstance(arch, Architecture):
        arch = architecture_of(model_or_arch)
    return arch.lora_params(r, targets if isinstance(targets, str) else tuple(targets))


def architecture_of(model: nn.Module, name: str = "this model") -> Architecture:
    """The shape numbers of a loaded llama-style model, for the same arithmetic as the presets."""
    return Architecture.from_config(model.config, name)


# The LoRA paper (Hu et al. 2021) adapts GPT-3 175B's d x d attention matrices.
GPT3_D_MODEL, GPT3_LAYERS, GPT3_PARAMS = 12288, 96, 175e9
GPT3_PAPER_FIGURES = [  # (where in the paper, matrices per layer, r, the figure it prints)
    ("Table 4, LoRA", ("W_q", "W_v"), 1, "4.7M"),
    ("Table 4, LoRA", ("W_q", "W_v"), 8, "37.7M"),
    ("Table 5, budget", ("W_q",), 8, "18M"),
    ("Table 5, budget", ("W_q", "W_v"), 4, "18M"),
    ("Table 5, budget", ("W_q", "W_k", "W_v", "W_o"), 2, "18M"),
]


def gpt3_lora_figures():
    """The paper's GPT-3 175B counts recomputed as layers x matrices x r·(d + d), with the
    fp16 adapter size in MiB (§4.2: r = 4 on W_q, W_v makes a checkpoint of "roughly 35MB",
    the paper's unit; 37.7 million bytes, 36.0 MiB)."""
    import pandas as pd

    rows = []
    for where, matrices, r, printed in GPT3_PAPER_FIGURES:
        n = GPT3_LAYERS * len(matrices) * lora_params_per_matrix(GPT3_D_MODEL, GPT3_D_MODEL, r)
        rows.append(
            {
                "paper": where,
                "matrices": ", ".join(matrices),
                "r": r,
                "paper says": printed,
                "recomputed": n,
                "share of 175B": f"1 in {GPT3_PARAMS / n:,.0f}",
                "fp16 (MiB)": round(mib(2 * n), 1),
            }
        )
    return pd.DataFrame(rows)


# --- the spectrum of an update ------------------------------------------------------------------


def singular_values(delta: torch.Tensor) -> torch.Tensor:
    """Singular values of ΔW, largest first, in float64 (float32's noise floor hides small ones)."""
    return torch.linalg.svdvals(delta.detach().to(torch.float64))


def energy_rank(s: torch.Tensor, energy: float = 0.9) -> int:
    """How many singular values hold `energy` of ΔW's squared Frobenius norm: its effective rank."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    power = s.to(torch.float64) ** 2
    if power.sum() == 0:
        return 0
    share = torch.cumsum(power, 0) / power.sum()
    return int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype) - 1e-12)) + 1


def numerical_rank(s: torch.Tensor, shape: tuple[int, int], eps: float = 2.0**-23) -> int:
    """Singular values above float32 rounding (max(shape) · eps · the largest): the true rank."""
    if len(s) == 0 or s[0] == 0:
        return 0
    return int((s > max(shape) * eps * s[0]).sum())


def spectrum_table(deltas: dict[str, torch.Tensor], energy: float = 0.9):
    """One row per update: its shape, numerical rank, effective rank and top singular value share."""
    import pandas as pd

    rows = []
    for name, delta in deltas.items():
        s = singular_values(delta)
        power = s**2
        rows.append(
            {
                "matrix": name,
                "shape": tuple(delta.shape),
                "max rank": min(delta.shape),
                "rank": numerical_rank(s, tuple(delta.shape)),
                f"rank for {energy:.0%} energy": energy_rank(s, energy),
                "top-1 share": float(power[0] / power.sum()) if power.sum() > 0 else 0.0,
            }
        )
    return pd.DataFrame(rows).set_index("matrix")


def _plain_name(name: str) -> str:
    """A module's name without peft's wrapper prefix, so full-FT and LoRA names match."""
    return name.removeprefix("base_model.model.")


def weight_snapshot(model: nn.Module, targets: str | list[str] = "all-linear") -> dict:
    """Copies of the target linear weights (take one before full fine-tuning to get its ΔW)."""
    head = model.get_output_embeddings()
    return {
        _plain_name(name): m.weight.detach().clone()
        for name, m in model.named_modules()
        if is_target(name, m, targets, head)
    }


def weight_deltas(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Full fine-tuning's update W_after − W_before for every matrix in a `weight_snapshot`."""
    modules = {_plain_name(n): m for n, m in model.named_modules()}
    return {n: modules[n].weight.detach() - w for n, w in before.items()}


def lora_deltas(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA's update scaling · B·A for every adapted matrix, ours (LoraLinear) or peft's."""
    deltas = {}
    for name, m in model.named_modules():
        if isinstance(m, LoraLinear):
            deltas[_plain_name(name)] = m.delta_weight().detach()
        elif hasattr(m, "get_delta_weight") and "default" in getattr(m, "lora_A", {}):
            deltas[_plain_name(name)] = m.get_delta_weight("default").detach()
    return deltas


# --- merging ------------------------------------------------------------------------------------


def merge_and_unload(model: nn.Module) -> nn.Module:
    """The plain model with each LoRA update folded into W (no added latency at inference):
    peft's `merge_and_unload` for a peft model, `LoraLinear.merge` and unwrapping for ours."""
    if callable(getattr(model, "merge_and_unload", None)):
        return model.merge_and_unload()
    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLinear):
            m.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, m.base)
    return model


# --- tables and checks for lesson 05 ------------------------------------------------------------


def matrix_table(arch: Architecture, r: int = 8):
    """Each linear layer of one block: its shape, the values of a full ΔW, and LoRA's
    r·(d_in + d_out) at rank r; then one block and every block (all linear layers targeted)."""
    import pandas as pd

    rows = [
        {
            "matrix": name,
            "d_in": d_in,
            "d_out": d_out,
            "ΔW values": d_in * d_out,
            f"LoRA at r={r}": lora_params_per_matrix(d_in, d_out, r),
        }
        for name, (d_in, d_out) in block_linear_shapes(arch).items()
    ]
    block = {key: sum(row[key] for row in rows) for key in ("ΔW values", f"LoRA at r={r}")}
    blocks = {key: arch.num_hidden_layers * value for key, value in block.items()}
    rows += [
        {"matrix": "one block", **block},
        {"matrix": f"{arch.num_hidden_layers} blocks", **blocks},
    ]
    table = pd.DataFrame(rows).set_index("matrix")
    table[["d_in", "d_out"]] = table[["d_in", "d_out"]].astype("Int64")  # blank for the sums
    table["LoRA / ΔW (%)"] = (100 * table[f"LoRA at r={r}"] / table["ΔW values"]).round(2)
    return table


def rank_costs(
    model_or_arch: nn.Module | Architecture,
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
    targets: tuple[str, ...] = ("all-linear", "attention"),
):
    """What LoRA trains and keeps at each rank, by arithmetic alone: trained values, their share
    of the base, AdamW's two fp32 moments (8 bytes each) and the fp32 adapter file (4 bytes)."""
    import pandas as pd

    if isinstance(model_or_arch, Architecture):
        base = model_or_arch.n_params
    else:
        base = sum(p.numel() for p in model_or_arch.parameters())
    rows = []
    for target in targets:
        for r in ranks:
            n = lora_trainable(model_or_arch, r, target)
            rows.append(
                {
                    "targets": target,
                    "r": r,
                    "trainable": n,
                    "% of base": round(100 * n / base, 3),
                    "AdamW state (MiB)": round(mib(8 * n), 2),
                    "adapter file (MiB)": round(mib(4 * n), 2),
                }
            )
    return pd.DataFrame(rows).set_index(["targets", "r"])


def peft_lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft's LoRA layers of a model, by the plain name of the linear layer they wrap."""
    return {
        _plain_name(name): m
        for name, m in model.named_modules()
        if "default" in getattr(m, "lora_A", {}) and hasattr(m, "get_delta_weight")
    }


@torch.no_grad()
def tie_to_peft(ours: nn.Module, theirs: nn.Module, seed: int = 0, std: float = 0.01) -> int:
    """Give each of our LoraLinear layers peft's A, and both the same random non-zero B (as
    training would leave it: with B = 0 both are the base, and a missing scaling would hide).
    Returns how many layers were tied; a layer that peft lacks is an error."""
    g = torch.Generator().manual_seed(seed)
    layers = peft_lora_layers(theirs)
    count = 0
    for name, layer in ours.named_modules():
        if not isinstance(layer, LoraLinear):
            continue
        peft_layer = layers[_plain_name(name)]
        b = std * torch.randn(layer.lora_B.shape, generator=g, dtype=layer.lora_B.dtype)
        layer.lora_A.copy_(peft_layer.lora_A["default"].weight)
        layer.lora_B.copy_(b)
        peft_layer.lora_B["default"].weight.copy_(b)
        count += 1
    return count


@torch.no_grad()
def logits_of(model: nn.Module, tokenizer, text: str) -> torch.Tensor:
    """The model's logits for one text, in eval mode (no dropout), on the model's device."""
    from tutorial_lib.scoring import eval_mode

    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(next(model.parameters()).device)
    with eval_mode(model):
        return model(input_ids=ids).logits


def _spectrum_stats(delta: torch.Tensor, energy: float, top: int) -> tuple[int, int, float]:
    """One update's rank, its rank holding `energy` of ‖ΔW‖², and the share of ‖ΔW‖² in its
    `top` largest singular values."""
    s = singular_values(delta)
    power = s**2
    share = float(power[:top].sum() / power.sum()) if power.sum() > 0 else 0.0
    return numerical_rank(s, tuple(delta.shape)), energy_rank(s, energy), share


def spectrum_summary(
    deltas_by_run: dict[str, dict[str, torch.Tensor]], energy: float = 0.9, top: int = 8
):
    """One row per run (e.g. full fine-tuning, LoRA): over its updates ΔW, the median rank, the
    median (and range of) ranks holding `energy` of ‖ΔW‖², and the median share of ‖ΔW‖² in
    the `top` largest singular values: what the best rank-`top` approximation would keep."""
    import pandas as pd

    rows = []
    for label, deltas in deltas_by_run.items():
        ranks, energy_ranks, shares = zip(
            *(_spectrum_stats(delta, energy, top) for delta in deltas.values())
        )
        e = pd.Series(energy_ranks)
        rows.append(
            {
                "run": label,
                "matrices": len(deltas),
                "median rank": pd.Series(ranks).median(),
                f"median rank for {energy:.0%}": e.median(),
                f"range for {energy:.0%}": f"{e.min()}–{e.max()}",
                f"top-{top} share": round(pd.Series(shares).median(), 3),
            }
        )
    return pd.DataFrame(rows).set_index("run")


def spectrum_by_shape(
    deltas_by_run: dict[str, dict[str, torch.Tensor]], energy: float = 0.9, top: int = 8
):
    """One row per run and matrix shape: a median over matrices of different shapes mixes
    different maxima (a 576 × 192 update has rank at most 192, a 576 × 576 one 576), so ranks
    are summarised per shape and also as a share of that shape's maximum rank."""
    import pandas as pd

    rows = []
    for label, deltas in deltas_by_run.items():
        shapes: dict[tuple[int, int], list[torch.Tensor]] = {}
        for delta in deltas.values():
            shapes.setdefault(tuple(delta.shape), []).append(delta)
        for shape, group in sorted(shapes.items()):
            most = min(shape)
            ranks, energy_ranks, shares = zip(
                *(_spectrum_stats(delta, energy, top) for delta in group)
            )
            rank, e = pd.Series(ranks).median(), pd.Series(energy_ranks).median()
            rows.append(
                {
                    "run": label,
                    "shape": f"{shape[0]} × {shape[1]}",
                    "matrices": len(group),
                    "max rank": most,
                    "median rank": rank,
                    "rank / max": round(rank / most, 3),
                    f"median rank for {energy:.0%}": e,
                    f"{energy:.0%} rank / max": round(e / most, 3),
                    f"top-{top} share": round(pd.Series(shares).median(), 3),
                }
            )
    return pd.DataFrame(rows).set_index(["run", "shape"])


def rank_of(run: dict) -> int:
    """The LoRA rank a run summary trained with, from its stored method config."""
    config = (run.get("spec") or {}).get("method_config") or {}
    if "r" not in config:
        raise ValueError(f"{run.get('label', run.get('method'))!r} has no LoRA rank in its config")
    return int(config["r"])


def by_rank(runs: list[dict], title: str = "LoRA rank: what it learns and what it keeps"):
    """Domain accuracy and probe retention against the rank, on a log-2 axis (1, 2, 4, ... 64)."""
    return plots.accuracy_and_retention(
        runs, [rank_of(run) for run in runs], "LoRA rank r", title, log2_x=True
    )


def energy_curves(
    deltas_by_run: dict, energy: float = 0.9, title: str = "How many directions hold an update"
):
    """For each run's updates ΔW (name -> matrix): the share of ‖ΔW‖² held by its k largest
    singular values, against k (`plots.spectrum_energy`); low-rank updates reach `energy` early."""
    spectra = {
        label: [singular_values(delta) for delta in deltas.values()]
        for label, deltas in deltas_by_run.items()
    }
    return plots.spectrum_energy(spectra, energy, title)
