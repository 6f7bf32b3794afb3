"""What a method adds at inference: the time one request's forward pass takes with it on."""

from __future__ import annotations

import statistics
import time

import torch

from tutorial_lib.data import render_prompt
from tutorial_lib.scoring import eval_mode


def forward_seconds(model, input_ids: torch.Tensor, repeats: int = 9, warmup: int = 2) -> float:
    """Median wall time of one forward pass: the median, because a busy core makes outliers."""
    times = []
    with eval_mode(model):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(input_ids=input_ids)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency_table(models: dict, tokenizer, question: str, repeats: int = 9):
    """Milliseconds per request (batch 1, one chat prompt) for each model, and the share each
    adds over the first one, which should be the base model."""
    import pandas as pd

    prompt = render_prompt(tokenizer, question)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    rows, base = [], None
    for name, model in models.items():
        device = next(model.parameters()).device
        ms = 1000 * forward_seconds(model, ids.to(device), repeats)
        base = base or ms
        rows.append({"model": name, "ms per request": ms, "added (%)": 100 * (ms / base - 1)})
    table = pd.DataFrame(rows).set_index("model").round(1)
    table.attrs["prompt_tokens"] = ids.shape[1]
    return table
