"""The same training code runs unchanged on two processes (CPU, gloo), started by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("dist_train.py")


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # `--cpu --num_processes 2` starts ONE process (measured); `--multi_gpu` starts two, and the
    # library's Accelerator(cpu=True) then joins them over gloo on a machine without a GPU.
    "accelerate": [
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_train_in_lockstep(launcher, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUTORIAL_THREADS": "1", "DIST_OUT": str(tmp_path)}
    cmd = [sys.executable, *LAUNCHERS[launcher], str(SCRIPT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in results)
    # gradients are all-reduced, so both replicas hold the same weights and log the same loss
    assert results[0]["losses"] == results[1]["losses"]
    assert len(results[0]["losses"]) == 5  # a script may call train twice under one launcher
    assert abs(results[0]["weight_sum"] - results[1]["weight_sum"]) < 1e-6
    # the library shut its process group down itself, before the interpreter's teardown
    left_open = [json.loads((tmp_path / f"rank-{r}.exit").read_text()) for r in (0, 1)]
    assert left_open == [False, False]
