"""Run by test_methods.py in a fresh process: every registered method through `run_experiment`.

Each process starts from torch's own, per-process random state (as a script or a restarted
kernel does); only the run's seed may decide what the methods draw and the order of the data.
Prints one JSON object: per method, the loss history and a hash of every trained weight.
"""

import hashlib
import json
import sys

import torch

from conftest import small_profile_with  # this script's folder, tests/, is on sys.path
from tutorial_lib.baseline import Baseline
from tutorial_lib.experiment import run_experiment
from tutorial_lib.methods import REGISTRY

model_dir = sys.argv[1]
names = sys.argv[2].split(",") if len(sys.argv) > 2 else sorted(REGISTRY)
profile = small_profile_with(domain_facts=2, batch_size=8, max_length=512)
out = {}
for name in names:
    torch.seed()  # what a new process gets: a different random state each time
    try:
        result = run_experiment(name, Baseline(profile, model_dir), steps=3, seed=7)
    except ValueError as exc:  # a method this model cannot take (e.g. BitFit with no biases)
        out[name] = {"error": str(exc)}
        continue
    digest = hashlib.sha256()
    for pname, p in sorted(result.model.named_parameters()):
        if p.requires_grad:
            digest.update(pname.encode() + p.detach().cpu().numpy().tobytes())
    out[name] = {"losses": result.train.loss_history, "weights": digest.hexdigest()}
print("RESULT " + json.dumps(out), flush=True)
