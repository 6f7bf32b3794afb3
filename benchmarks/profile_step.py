"""Where a training step's time goes, LoRA next to full fine-tuning: torch.profiler by operator.

    python benchmarks/profile_step.py [--length 128] [--steps 3]

Prints seconds per step for both, then each method's time split into matrix multiplies, the
optimizer, and the rest, and the operators that take longest. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile
from training import Trainee, synthetic_batches

from tutorial_lib.device import set_threads
from tutorial_lib.methods import apply_method, get_method
from tutorial_lib.models import load_base_model

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


def profile_step(trainee: Trainee, batch: dict, steps: int) -> tuple[float, dict, list]:
    """Seconds per step (after a warm-up step), self time per bucket, and the top operators."""
    trainee.step(batch)
    start = time.perf_counter()
    for _ in range(steps):
        trainee.step(batch)
    seconds = (time.perf_counter() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainee.step(batch)
    buckets: dict[str, float] = defaultdict(float)
    events = prof.key_averages()
    for event in events:
        buckets[kind(event.key)] += event.self_cpu_time_total / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    return seconds, dict(buckets), [(e.key, e.count, e.self_cpu_time_total / 1e6) for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (batch 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method")
    args = parser.parse_args()
    threads = set_threads()
    model, tokenizer = load_base_model()
    batch = synthetic_batches(tokenizer, args.length, 8, count=1)[0]
    print(f"batch 8 x {args.length} tokens, {threads} threads")
    for method in ("full", "lora"):
        fresh, _ = load_base_model()
        trainee = Trainee(apply_method(fresh, method).train(), get_method(method).default_lr)
        seconds, buckets, top = profile_step(trainee, batch, args.steps)
        total = sum(buckets.values())
        shares = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in sorted(buckets.items()))
        print(f"\n{method}: {seconds:.2f} s/step; profiled step: {shares}")
        for key, count, secs in top:
            print(f"  {key:<40} {count:>6} calls {secs:7.3f} s")
        del trainee, fresh
    del model


if __name__ == "__main__":
    main()
