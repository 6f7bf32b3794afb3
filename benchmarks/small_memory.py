"""Routes for a small machine: whole-process peak memory of short command-line runs.

A public Binder session has 1-2 GB, less than any lesson's kernel peaks at. A lesson's first
cell (`tutorial_lib.lesson_fit.check_lesson`) then offers the routes recorded here whose peak
fits: each is `tutorial-lib train` in the `quick` profile, in a fresh process, with its peak
resident memory read from the operating system (`wait4`), the model load included. Smaller
training and evaluation batches change only sizes, not code.

    python benchmarks/small_memory.py --json benchmarks/results/small-memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tutorial_lib.provenance import command_line, record

ROUTES = (  # (method, batch size, evaluation batch size)
    ("lora", 2, 2),
    ("qlora", 2, 2),
    ("lora", 4, 4),
    ("full", 2, 2),
    ("lora", 8, 32),  # the profile's own sizes, for scale
)
STEPS = 8


def command(method: str, batch: int, eval_batch: int) -> list[str]:
    """The command a learner types (recorded as typed, run with this interpreter)."""
    return [
        "tutorial-lib",
        "train",
        "--method",
        method,
        "--profile",
        "quick",
        "--steps",
        str(STEPS),
        "--batch-size",
        str(batch),
        "--eval-batch-size",
        str(eval_batch),
    ]


def measure(method: str, batch: int, eval_batch: int) -> dict:
    """Run one route in a fresh process; its peak RSS comes from the kernel's own accounting."""
    typed = command(method, batch, eval_batch)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutorial_lib", *typed[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    record = {
        "command": " ".join(typed),
        "method": method,
        "batch_size": batch,
        "eval_batch_size": eval_batch,
        "steps": STEPS,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),  # Linux reports KiB
    }
    if proc.returncode:
        record["error"] = (err.strip().splitlines() or ["no output"])[-1]
    else:
        record["output"] = out.strip().splitlines()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    routes = []
    for route in ROUTES:
        routes.append(measure(*route))
        print(f"{routes[-1]['command']}: {routes[-1]['peak_rss_mib']} MiB", flush=True)
    ran = record(command_line("python benchmarks/small_memory.py", argv)).to_json()
    args.json.write_text(json.dumps({"routes": routes, "ran": ran}, indent=1) + "\n")
    return 1 if any("error" in r for r in routes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
