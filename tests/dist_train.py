"""Run by test_distributed.py under a multi-process launcher: a few steps on the tiny model."""

import json
import sys

from tutorial_lib import data
from tutorial_lib.methods import apply_method
from tutorial_lib.models import tiny_model
from tutorial_lib.train import TrainConfig, train

model, tok = tiny_model(seed=0)
examples = data.encode_chats(tok, data.load_domain_train()[:32], max_length=512)
model = apply_method(model, "full")
result = train(model, examples, TrainConfig(steps=3, batch_size=8, lr=1e-3), tok.pad_token_id)
weight_sum = sum(p.detach().double().sum().item() for p in model.parameters())
print(
    "RESULT "
    + json.dumps(
        {"world_size": result.world_size, "losses": result.loss_history, "weight_sum": weight_sum}
    ),
    file=sys.stdout,
    flush=True,
)
