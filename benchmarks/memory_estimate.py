"""The memory estimator against measured peaks: every method, two batch sizes, the real model.

Each measurement is `tests/estimate_run.py` in a fresh process (it says why), two training
steps of 128-token sequences at one thread: what training adds to the loaded model (gradients,
optimizer state, activations) as `train`'s `PeakMemory` measures it, beside
`memory.estimate(memory.setup_for(model, method, ...))`. `tests/test_estimate.py` recomputes
every estimate from the recorded setups and checks it against these peaks.

    python benchmarks/memory_estimate.py --json benchmarks/results/memory-estimate.json
    python benchmarks/memory_estimate.py --methods dora --json ...  # re-measure one, keep the rest
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tutorial_lib.methods import REGISTRY
from tutorial_lib.models import DEFAULT_MODEL
from tutorial_lib.provenance import command_line, record

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "estimate_run.py"
BATCHES = (4, 8)
SEQ_LEN = 128


def measure(method: str, batch: int, model: str = DEFAULT_MODEL) -> dict:
    """One method at one batch size, in a fresh process; a method that refuses the model (BitFit
    on a model without biases) comes back as its error."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), method, str(batch), str(SEQ_LEN), model]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        return {"method": method, "batch": batch, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--methods", help="comma-separated (default: every registered method)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",") if args.methods else sorted(REGISTRY)
    runs = []
    for method in methods:
        for batch in BATCHES:
            run = measure(method, batch)
            runs.append(run)
            if "error" in run:
                print(f"{method:15} batch {batch}: {run['error']}", flush=True)
                continue
            ratio = run["estimated"] / run["measured"]
            print(
                f"{method:15} batch {batch}: measured {run['measured'] / 2**20:7.0f} MiB, "
                f"estimated {run['estimated'] / 2**20:7.0f} MiB ({ratio - 1:+.0%})",
                flush=True,
            )
    if args.methods and args.json.exists():  # a re-measured method replaces its old runs only
        kept = [r for r in json.loads(args.json.read_text())["runs"] if r["method"] not in methods]
        runs = sorted(kept + runs, key=lambda r: (r["method"], r["batch"]))
    sizes = {"model": DEFAULT_MODEL, "seq_len": SEQ_LEN, "batches": list(BATCHES)}
    ran = record(command_line("python benchmarks/memory_estimate.py", argv), sizes).to_json()
    report = {"model": DEFAULT_MODEL, "seq_len": SEQ_LEN, "runs": runs, "ran": ran}
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
