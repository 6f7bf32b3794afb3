"""The numbers the lessons' worked solutions quote, computed from the library: shapes and the
memory estimator only, so nothing is trained or loaded (a model of SmolLM2-135M's shape is built
on the meta device, with no weights), and the committed sweep and comparison (lesson 07). Lesson
06's code-book errors read two weight matrices of the cached model's safetensors file
(`weight_answers`), and nothing else of it.

The solutions name the committed record, `benchmarks/results/exercise-answers.json`, so the prose
check finds their numbers there; `tests/test_solutions.py` recomputes it, so a solution whose
number the library no longer gives fails. Regenerate it with

    python -m tutorial_lib.exercise_answers > benchmarks/results/exercise-answers.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from tutorial_lib.memory import ARCHITECTURES, count_params, estimate, setup_for
from tutorial_lib.memory.shapes import Architecture
from tutorial_lib.methods import apply_method
from tutorial_lib.methods.additive import AdapterConfig
from tutorial_lib.methods.full import FullConfig

RECORD = "benchmarks/results/exercise-answers.json"
SWEEP = "benchmarks/results/rate-sweep.json"  # the fair-rate sweep, on lesson 03's budget
MIB = 2**20
SMOL = ARCHITECTURES["SmolLM2-135M"]


def shaped(arch: Architecture = SMOL):
    """A llama of `arch`'s shape on the meta device: real layers, no weights, no memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        vocab_size=arch.vocab_size,
        tie_word_embeddings=arch.tie_word_embeddings,
    )
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def frozen_embeddings(batch: int = 8, seq_len: int = 128) -> dict:
    """Lesson 01, exercise 2: full fine-tuning with the (tied) embedding matrix frozen."""
    every = apply_method(shaped(), "full")
    frozen = apply_method(shaped(), "full", FullConfig(train_embeddings=False))
    full = estimate(every.config, setup_for(every, batch=batch, seq_len=seq_len))
    part = estimate(frozen.config, setup_for(frozen, batch=batch, seq_len=seq_len))
    trained, total = count_params(frozen)
    return {
        "frozen_params": total - trained,
        "trained_params": trained,
        "optimizer_mib_saved": (full.optimizer - part.optimizer) / MIB,
        "gradients_mib_saved": (full.gradients - part.gradients) / MIB,
        "weights_mib_saved": (full.weights - part.weights) / MIB,  # none: it is still stored
    }


def largest_full_finetune(gpu_gib: float = 24, batch: int = 1, seq_len: int = 512) -> dict:
    """Lesson 01, exercise 3: the most blocks of Llama-3.2-1B's width whose full fine-tuning
    fits `gpu_gib`, in fp32 and in bf16 mixed precision (fp32 master copy), and their size."""
    wide = ARCHITECTURES["Llama-3.2-1B"]
    found = {}
    for dtype in ("fp32", "bf16"):
        blocks = max(
            n
            for n in range(1, 129)
            if estimate(
                dataclasses.replace(wide, num_hidden_layers=n),
                method="full",
                dtype=dtype,
                batch=batch,
                seq_len=seq_len,
            ).fits(gpu_gib)
        )
        largest = dataclasses.replace(wide, num_hidden_layers=blocks)
        total = estimate(largest, method="full", dtype=dtype, batch=batch, seq_len=seq_len).total
        found[dtype] = {
            "blocks": blocks,
            "params_billions": round(largest.n_params / 1e9, 4),
            "total_gib": round(total / 2**30, 2),
        }
    return found


def adapter_params(bottleneck: int = 16, placement: str = "pfeiffer") -> int:
    """Lesson 03, exercises 3 and 4: the bottleneck adapter's trainable count on SmolLM2-135M."""
    config = AdapterConfig(bottleneck=bottleneck, placement=placement)
    return count_params(apply_method(shaped(), "adapter", config))[0]


def third_rates(sweep: Path | None = None) -> dict:
    """Lesson 03, exercise 2: the adapter's and (IA)³'s three rates of the committed rate sweep
    (its first two are the lesson's own runs): the common recall target they give and, for each
    method, the two rates that bracket it (`matched.common_target`, `matched.over_rates`)."""
    from tutorial_lib import matched

    sweep = sweep or Path(__file__).resolve().parent.parent / SWEEP
    methods = json.loads(sweep.read_text(encoding="utf-8"))["methods"]
    groups = {
        name: [{"method": name, **rate} for rate in methods[name]["rates"]]
        for name in ("adapter", "ia3")
    }
    target, _ = matched.common_target(groups)
    return {
        "target": round(target, 3),
        "rates": {name: [r["lr"] for r in runs] for name, runs in groups.items()},
        "between": {
            name: list(matched.over_rates(runs, target).between) for name, runs in groups.items()
        },
    }


def prefix_with_network() -> int:
    """Lesson 03, exercise 5: prefix tuning's trainable count with its reparameterising MLP."""
    from tutorial_lib.methods.prompts import PrefixConfig

    return count_params(apply_method(shaped(), "prefix-tuning", PrefixConfig(projection=True)))[0]


# --- lesson 06: block size and code books -------------------------------------------------------

BLOCKS = (32, 64, 256, 1024)  # the block sizes of lesson 06's exercise 1


def storage_per_block() -> dict:
    """Lesson 06, exercise 1: bits per weight for each block size, with fp32 scales and with
    double-quantised ones (`quant.bits_per_param`)."""
    from tutorial_lib import quant

    return {
        str(block): {
            "bits": quant.bits_per_param(block=block),
            "bits_double_quant": round(quant.bits_per_param(block=block, double=True), 4),
        }
        for block in BLOCKS
    }


def fresh_process_memory(batch: int = 8) -> dict:
    """Lesson 06, exercise 6: LoRA's and QLoRA's loaded model and what two training steps added
    to it, each in a fresh process (`benchmarks/results/memory-estimate.json`, at `batch`)."""
    from tutorial_lib.results import committed

    runs = committed("memory-estimate.json")["runs"]
    return {
        r["method"]: {
            "loaded_mib": round(r["model_bytes"] / MIB, 1),
            "training_adds_mib": round(r["measured"] / MIB, 1),
        }
        for r in runs
        if r["method"] in ("lora", "qlora") and r["batch"] == batch
    }


def base_weight(name: str):
    """One weight matrix of the cached base model, read from its safetensors file alone."""
    from safetensors import safe_open

    from tutorial_lib.models import fetch_model

    with safe_open(str(fetch_model() / "model.safetensors"), "pt") as f:
        return f.get_tensor(name).float()


def weight_answers() -> dict:
    """Lesson 06, exercises 1 and 2: the relative RMS error of each code book (`quant.error_table`)
    on block 15's MLP down-projection at every block size, and on the embedding matrix, which
    the Q4_1 file did not round (`quant.distinct_per_block` says which grid each sits on)."""
    from tutorial_lib import quant

    down = base_weight("model.layers.15.mlp.down_proj.weight")
    embed = base_weight("model.embed_tokens.weight")
    distinct = quant.distinct_per_block(embed, 32).float()
    return {
        "06": {
            "1": {"errors": quant.error_table(down, (None, *BLOCKS)).to_dict(orient="index")},
            "2": {
                "distinct_per_32_max": int(distinct.max()),
                "distinct_per_32_mean": round(distinct.mean().item(), 1),
                "errors": quant.error_table(embed).to_dict(orient="index"),
            },
        }
    }


# --- lesson 07: the committed sweep and comparison -----------------------------------------------

HEADLINE = ["full", "lora", "qlora", "adapter", "ia3", "ln-tuning", "top-layers"]  # lesson 07's


def per_seed(methods: tuple[str, ...] = ("lora", "qlora")) -> dict:
    """Lesson 07, exercise 1: recall and ΔCE of each seed of `methods` in the committed
    comparison (`compare.ranking_table` pairs them seed by seed)."""
    from tutorial_lib import compare

    return {
        m: {
            str(r["seed"]): {
                "recall": round(r["domain_recall_after"], 3),
                "general_ce_change": round(r["general_ce_change"], 3),
            }
            for r in compare.of_json(compare.committed()).records
            if r["method"] == m and "error" not in r
        }
        for m in methods
    }


def top_layers_estimate(ks: tuple[int, ...] = (2, 8), batches: tuple[int, ...] = (4, 8)) -> dict:
    """Lesson 07, exercise 4: the estimator's figure for training the top k blocks (what training
    adds to the weights, 128-token sequences, as `benchmarks/memory_estimate.py` measures it),
    and the default k's measurement (`benchmarks/results/memory-estimate.json`)."""
    from tutorial_lib.methods.selective import TopLayersConfig

    found = {}
    for k in ks:
        model = apply_method(shaped(), "top-layers", TopLayersConfig(k=k))
        arch = Architecture.from_config(model.config, SMOL.name)
        est = {b: estimate(arch, setup_for(model, "top-layers", b, 128)) for b in batches}
        largest = est[max(batches)]
        found[str(k)] = {
            "trainable_params": count_params(model)[0],
            "beyond_weights_mib": {
                str(b): round(e.beyond_weights / MIB, 1) for b, e in est.items()
            },
            f"batch_{max(batches)}_mib": {
                part: round(getattr(largest, part) / MIB, 1)
                for part in ("gradients", "optimizer", "activations")
            },
        }
    from tutorial_lib.results import committed

    found[str(TopLayersConfig().k)]["measured_mib"] = {  # the default k, in a fresh process
        str(r["batch"]): round(r["measured"] / MIB, 1)
        for r in committed("memory-estimate.json")["runs"]
        if r["method"] == "top-layers" and r["batch"] in batches
    }
    return found


def another_target(target: float = 0.7) -> dict:
    """Lesson 07, exercise 2: `matched.table` at `target` over the committed sweep, as the lesson
    reads it: each method's ΔCE there, or why it has none, and the order of those that do."""
    from tutorial_lib import matched, rates

    sweep = rates.swept_runs(HEADLINE + ["dora"])
    learned = matched.learned_methods(matched.by_method(sweep))
    table = matched.table(
        [r for r in sweep if r["method"] in learned], target, measures=("general_ce_change",)
    )
    ce = {m: row["general_ce_change"] for m, row in table.iterrows()}
    kept = {m: round(float(v), 3) for m, v in ce.items() if v is not None and v == v}
    return {
        "target": target,
        "general_ce_change": kept,
        "between_lr": {m: table.loc[m, "between lr"] for m in kept},
        "no_figure": {
            m: row["no matched figure because"] for m, row in table.iterrows() if m not in kept
        },
        "order": sorted(kept, key=kept.get),
    }


def _agreement(records: list[dict], tasks) -> dict:
    from tutorial_lib import rank_agreement

    found = rank_agreement.probe_vs_suite(records, tasks)
    return {
        name: {
            "spearman": round(found[name]["spearman"], 4),
            "spearman_ci95": [round(v, 4) for v in found[name]["spearman_ci95"]],
            "kendall_tau": round(found[name]["kendall_tau"], 4),
            "n": found[name]["n"],
        }
        for name in ("probe", "ce")
    }


def without_floors() -> dict:
    """Lesson 07, exercise 3: the probe's and ΔCE's rank agreement with the suite over the
    committed comparison, with and without the floor runs, on the lesson's tasks (those above
    chance), and the exercise's call as written (no `tasks`: every measured task)."""
    from tutorial_lib import compare, rank_agreement

    everything = compare.of_json(compare.committed())
    tasks = rank_agreement.tasks_above_chance(everything.records[0])
    return {
        "tasks": list(tasks),
        "with_floors": _agreement(everything.records + everything.floors, tasks),
        "without_floors": _agreement(everything.records, tasks),
        "without_floors_every_task": _agreement(everything.records, None),
    }


def checkpoint_against_forgetting(customers: int = 100) -> dict:
    """Lesson 07, exercise 5: each method's checkpoint and mean ΔCE in the committed comparison,
    the methods no other beats on both (all, and those that recalled anything), and what
    `customers` fine-tunes of each would store."""
    from tutorial_lib import compare
    from tutorial_lib.results import pareto_front

    summary = [r for r in compare.of_json(compare.committed()).summary() if r["seeds"]]
    axes = ("checkpoint_bytes", "general_ce_change")
    learned = [r for r in summary if r["domain_recall_after"]["mean"] > 0.1]
    return {
        "checkpoint_mib": {r["method"]: round(r[axes[0]]["mean"] / MIB, 3) for r in summary},
        "general_ce_change": {r["method"]: round(r[axes[1]]["mean"], 3) for r in summary},
        "recall": {r["method"]: round(r["domain_recall_after"]["mean"], 3) for r in summary},
        "front": pareto_front(summary, *axes, higher=(False, False)),
        "front_of_methods_that_recalled": pareto_front(learned, *axes, higher=(False, False)),
        "customers": customers,
        "customers_gib": {
            r["method"]: round(customers * r[axes[0]]["mean"] / 2**30, 2) for r in summary
        },
    }


def merged(*parts: dict) -> dict:
    """Nested dicts merged key by key (the shape-only answers and the weights' ones)."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def shape_answers() -> dict:
    """The answers that need no weights: shapes, the estimator and committed results."""
    return {
        "01": {"2": frozen_embeddings(), "3": largest_full_finetune()},
        "03": {
            "2": third_rates(),
            "3": {
                "bottleneck_64": adapter_params(bottleneck=64),
                "bottleneck_16": adapter_params(),
            },
            "4": {"houlsby": adapter_params(placement="houlsby"), "pfeiffer": adapter_params()},
            "5": {"prefix_with_mlp": prefix_with_network()},
        },
        "06": {"1": {"storage": storage_per_block()}, "6": fresh_process_memory()},
        "07": {
            "1": per_seed(),
            "2": another_target(),
            "3": without_floors(),
            "4": top_layers_estimate(),
            "5": checkpoint_against_forgetting(),
        },
    }


def answers() -> dict:
    """Every answer, by lesson and exercise number."""
    return merged(shape_answers(), weight_answers())


if __name__ == "__main__":
    json.dump(answers(), sys.stdout, indent=2)
    sys.stdout.write("\n")
