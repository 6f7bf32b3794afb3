"""The published suite on the real base model: accuracy per task, chance, headroom, seconds.

    python benchmarks/suite_time.py [--items 100] [--out benchmarks/results/suite-time.json]

Each task's first N recorded items (`data/suite_items.json`) are scored as lm-evaluation-harness
scores them (`tutorial_lib.suite`), with the project's scorer, on the CPU threads given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from tutorial_lib.models import load_base_model
from tutorial_lib.suite import COMPOSITE_TASKS, composite, headroom, load_suite
from tutorial_lib.suite_eval import evaluate_task

OUT = Path(__file__).resolve().parent / "results" / "suite-time.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100, help="items per task (1-100)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--note", default="", help="how the machine was loaded")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_base_model()
    suite = load_suite(args.items)
    results, seconds = {}, {}
    for task, items in suite.items():
        start = time.perf_counter()
        results[task] = evaluate_task(model, tokenizer, items, args.batch_size)
        seconds[task] = time.perf_counter() - start
        print(f"{task}: acc {results[task].accuracy:.3f} in {seconds[task]:.1f} s", flush=True)
    rows = [{**row, "seconds": round(seconds[row["task"]], 1)} for row in headroom(results)]
    record = {
        "what": "base model (smollm2-135m-instruct, fp32) on the published suite, lm-eval formats",
        "items_per_task": args.items,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible",
        "note": args.note,
        "tasks": rows,
        "composite": composite(results),
        "composite_tasks": list(COMPOSITE_TASKS),
        "seconds_total": round(sum(seconds.values()), 1),
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
