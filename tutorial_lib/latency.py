"""What a method adds at inference: the time one request's forward pass takes with it on."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

import torch

from tutorial_lib.data import render_prompt
from tutorial_lib.methods.base import adapters_disabled
from tutorial_lib.scoring import eval_mode


def _once(model, input_ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(input_ids=input_ids)
    return time.perf_counter() - start


def forward_seconds(model, input_ids: torch.Tensor, repeats: int = 9, warmup: int = 2) -> float:
    """Median wall time of one forward pass: the median, because a busy core makes outliers."""
    with eval_mode(model):
        for _ in range(warmup):
            _once(model, input_ids)
        return statistics.median(_once(model, input_ids) for _ in range(repeats))


def latency_table(models: dict, tokenizer, question: str, repeats: int = 9):
    """Milliseconds per request (batch 1, one chat prompt) for each model, and the share each
    adds over the first one, which should be the base model. The models take turns, one
    forward pass each per round, so a slow minute of the machine hits them all alike."""
    import pandas as pd

    prompt = render_prompt(tokenizer, question)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    times: dict[str, list[float]] = {name: [] for name in models}
    with ExitStack() as stack:
        for model in models.values():
            stack.enter_context(eval_mode(model))
        inputs = {name: ids.to(next(m.parameters()).device) for name, m in models.items()}
        for round_ in range(repeats + 1):  # round 0 warms every model up and is not kept
            for name, model in models.items():
                seconds = _once(model, inputs[name])
                if round_:
                    times[name].append(seconds)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    base = next(iter(ms.values()))
    rows = [
        {"model": n, "ms per request": v, "added (%)": 100 * (v / base - 1)} for n, v in ms.items()
    ]
    table = pd.DataFrame(rows).set_index("model").round(1)
    table.attrs["prompt_tokens"] = ids.shape[1]
    return table


@contextmanager
def merged(model):
    """A peft model with its adapter merged into the weights for the duration (LoRA's inference
    route), then unmerged: the same model object timed both ways."""
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def against_base(
    model,
    tokenizer,
    question: str,
    name: str,
    repeats: int = 9,
    more: dict[str, Callable[[], AbstractContextManager]] | None = None,
):
    """Milliseconds per request of one model with its method off (the base) and on, timed in
    turns on the same object: round 0 warms up and is not kept, then base, method, base, ...
    so order and a slow minute hit both alike, and only one model is in memory. `more` adds
    states to time in the same rounds (e.g. `{"merged": lambda: merged(model)}`). A method
    that changes the base weights in place cannot be switched off: do not time it here."""
    states = {"base": lambda: adapters_disabled(model), name: nullcontext, **(more or {})}
    return _interleaved(model, tokenizer, question, states, repeats)


def _interleaved(model, tokenizer, question: str, states: dict, repeats: int):
    """The rows of `latency_table`, for one model in several states (the first: the reference)."""
    import pandas as pd

    prompt = render_prompt(tokenizer, question)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    ids = ids.to(next(model.parameters()).device)
    times: dict[str, list[float]] = {state: [] for state in states}
    with eval_mode(model):
        for round_ in range(repeats + 1):  # round 0 warms every state up and is not kept
            for state, switch in states.items():
                with switch():
                    seconds = _once(model, ids)
                if round_:
                    times[state].append(seconds)
    ms = {state: 1000 * statistics.median(t) for state, t in times.items()}
    reference = next(iter(ms.values()))
    rows = [
        {"model": n, "ms per request": v, "added (%)": 100 * (v / reference - 1)}
        for n, v in ms.items()
    ]
    table = pd.DataFrame(rows).set_index("model").round(1)
    table.attrs["prompt_tokens"] = ids.shape[1]
    return table
