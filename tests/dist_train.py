"""Run by test_distributed.py under a multi-process launcher: a few steps on the tiny model, twice.

Each rank writes its result to $DIST_OUT/rank-N.json (launchers interleave the ranks' stdout),
and at exit whether the process group was still open when the interpreter began tearing down:
left to the interpreter, one run in six aborted after its work was done.
"""

import atexit
import json
import os
from pathlib import Path

import torch

OUT = Path(os.environ["DIST_OUT"])
RANK = os.environ.get("RANK", "0")


def _report_exit() -> None:
    (OUT / f"rank-{RANK}.exit").write_text(json.dumps(torch.distributed.is_initialized()))


atexit.register(_report_exit)  # registered first, so it runs last: after the library's shutdown

from tutorial_lib import data  # noqa: E402
from tutorial_lib.methods import apply_method  # noqa: E402
from tutorial_lib.models import tiny_model  # noqa: E402
from tutorial_lib.train import TrainConfig, train  # noqa: E402

model, tok = tiny_model(seed=0)
examples = data.encode_chats(tok, data.load_domain_train()[:32], max_length=512)
model = apply_method(model, "full")
result = train(model, examples, TrainConfig(steps=3, batch_size=8, lr=1e-3), tok.pad_token_id)
again = train(model, examples, TrainConfig(steps=2, batch_size=8, lr=1e-3), tok.pad_token_id)
weight_sum = sum(p.detach().double().sum().item() for p in model.parameters())
summary = {
    "world_size": result.world_size,
    "losses": result.loss_history + again.loss_history,
    "weight_sum": weight_sum,
}
(OUT / f"rank-{RANK}.json").write_text(json.dumps(summary))
