"""The numbers the lessons' worked solutions quote, computed from the library: shapes and the
memory estimator only, so nothing is trained or loaded (a model of SmolLM2-135M's shape is built
on the meta device, with no weights).

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


def answers() -> dict:
    """Every answer, by lesson and exercise number."""
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
    }


if __name__ == "__main__":
    json.dump(answers(), sys.stdout, indent=2)
    sys.stdout.write("\n")
