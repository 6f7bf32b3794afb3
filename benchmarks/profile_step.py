"""Where a training step's time goes, LoRA next to full fine-tuning: torch.profiler by operator.

    python benchmarks/profile_step.py [--length 128] [--steps 4]

Prints seconds per step for both, then each method's time split into matrix multiplies, the
optimizer, and the rest, and the operators that take longest. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from training import fixed_length_examples

from tutorial_lib.device import set_threads
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.models import load_base_model
from tutorial_lib.train import TrainConfig, train

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def kind(op: str) -> str:
    """The bucket an operator's time belongs to."""
    if op in MATMUL:
        return "matmul"
    if (
        "foreach" in op
        or "adam" in op.lower()
        or op in ("aten::lerp_", "aten::addcdiv_", "aten::sqrt")
    ):
        return "optimizer"
    return "other"


def profile_step(model, examples: list[dict], lr: float, steps: int) -> tuple[float, dict, list]:
    """Seconds per step of a `train` run (its first step left out), self time per bucket of one
    later step, and that step's top operators: the real loop, profiled from its `on_step` hook."""
    schedule = torch.profiler.schedule(wait=1, warmup=1, active=1, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule) as prof:
        result = train(
            model,
            examples,
            TrainConfig(steps=max(steps, 3), batch_size=8, lr=lr, warmup_steps=1),
            pad_id=0,  # fixed-length examples: nothing is padded
            on_step=lambda *_: prof.step(),
        )
    buckets: dict[str, float] = defaultdict(float)
    events = prof.key_averages()
    for event in events:
        buckets[kind(event.key)] += event.self_cpu_time_total / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return (
        result.sec_per_step,
        dict(buckets),
        [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in top],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (batch 8)")
    parser.add_argument("--steps", type=int, default=4, help="steps per run (at least 3)")
    args = parser.parse_args()
    threads = set_threads()
    _, tokenizer = load_base_model()
    examples = fixed_length_examples(tokenizer, args.length, 8 * 4)
    print(f"batch 8 x {args.length} tokens, {threads} threads")
    for method in ("full", "lora"):
        model = apply_method(load_base_model()[0], method)
        seconds, buckets, top = profile_step(
            model, examples, get_method(method).default_lr, args.steps
        )
        total = sum(buckets.values())
        shares = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in sorted(buckets.items()))
        print(f"\n{method}: {seconds:.2f} s/step; profiled step: {shares}")
        for key, count, secs in top:
            print(f"  {key:<40} {count:>6} calls {secs:7.3f} s")
        del model


if __name__ == "__main__":
    main()
