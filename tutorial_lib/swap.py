"""One frozen base, one small set of trained weights per task, swapped at inference.

The essay's "swap parts per task": a company's adapter file is loaded into the same model in
place of another's, and with the method switched off the model is the base again, exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tutorial_lib import stopwatch
from tutorial_lib.checkpoint import load_trainable
from tutorial_lib.evaluate import DOMAIN_STYLE, adapters_disabled, evaluate_choices
from tutorial_lib.scoring import eval_mode


def domain_accuracy(model, tokenizer, questions: list[dict], batch_size: int = 32) -> float:
    """Held-out domain accuracy of the model as it is now (whichever weights are loaded)."""
    with stopwatch.timed("evaluation"):
        return evaluate_choices(
            model, tokenizer, questions, batch_size, "domain", DOMAIN_STYLE
        ).accuracy


def swap_table(model, tokenizer, weights: dict[str, Path], questions: dict[str, list[dict]]):
    """Domain accuracy (columns: each task's held-out questions) for the base with the method
    off, then for each saved weights file (rows) loaded in turn into the same model."""
    import pandas as pd

    rows = []
    with adapters_disabled(model):
        rows.append(
            {"weights loaded": "none (method off)"}
            | {task: domain_accuracy(model, tokenizer, qs) for task, qs in questions.items()}
        )
    for name, path in weights.items():
        load_trainable(model, path)
        rows.append(
            {"weights loaded": name}
            | {task: domain_accuracy(model, tokenizer, qs) for task, qs in questions.items()}
        )
    return pd.DataFrame(rows).set_index("weights loaded").round(3)


def base_logits(base, tokenizer, text: str) -> torch.Tensor:
    """The base model's logits for `text`: kept, they stand in for the base model in
    `base_outputs_unchanged`, so the base need not stay loaded beside the trained model."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with eval_mode(base), torch.no_grad():
        return base(input_ids=ids).logits


def base_outputs_unchanged(model, base, tokenizer, text: str) -> bool:
    """True when the model with its method switched off gives the base model's logits bit for
    bit: training the added weights touched nothing of the base. `base` is the base model, or
    its logits for `text` (`base_logits`)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    want = base if isinstance(base, torch.Tensor) else base_logits(base, tokenizer, text)
    with adapters_disabled(model), eval_mode(model), torch.no_grad():
        got = model(input_ids=ids).logits
    return torch.equal(got, want)
