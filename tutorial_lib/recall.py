"""Learning measured as recall: the model's own greedy reply to each held-out wording is correct
when it states the fact's value (`values.states_value`), beside multiple-choice accuracy, which
only asks the model to recognise the trained sentence among four.

The control scores each item's choices after an unrelated question (another fact's): accuracy
that survives the wrong question is recognition of the string, not an answer to the question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tutorial_lib import stopwatch
from tutorial_lib.choices import DOMAIN_STYLE, ChoiceResult, evaluate_choices, paired_stderr
from tutorial_lib.data import render_prompt
from tutorial_lib.memory.machine import hands_memory_back
from tutorial_lib.methods.base import eval_mode
from tutorial_lib.scoring import progress
from tutorial_lib.values import states_value

MAX_NEW_TOKENS = 32  # a one-sentence answer is 10-20 tokens; a value comes early in it
# prompts generated together (left-padded): on 2 CPU cores, 56 prompts in one batch took
# 47 CPU-seconds, and 16 in one batch 30: a decoding step costs little more for more rows
RECALL_BATCH = 64


@dataclass
class RecallResult:
    """Per-item greedy replies and whether each states its fact's value."""

    ids: list[str]
    replies: list[str]
    values: list[str]
    correct: list[bool]

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.replies) == len(self.values) == len(self.correct):
            raise ValueError("ids, replies, values and correct must have one entry per item")

    @property
    def accuracy(self) -> float:
        """Fraction of items whose reply states the value (NaN when there are none)."""
        return sum(self.correct) / len(self.ids) if self.ids else float("nan")

    @property
    def stderr(self) -> float:
        """Standard error of the recall (binomial over items)."""
        p, n = self.accuracy, len(self.ids)
        return math.sqrt(p * (1 - p) / n) if n else float("nan")

    def table(self):
        """Each question's reply, its value and whether it was recalled (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(
            {"id": self.ids, "value": self.values, "reply": self.replies, "recalled": self.correct}
        )


def generate_replies(
    model,
    tokenizer,
    items: list[dict],
    batch_size: int = RECALL_BATCH,
    max_new_tokens: int = MAX_NEW_TOKENS,
    desc: str = "recall",
) -> list[str]:
    """Greedy replies to each item's question, asked as `evaluate.answer` asks (the chat
    template after the task's system prompt, or the item's own "system"), batched with left
    padding so every prompt ends where generation starts."""
    prompts = [render_prompt(tokenizer, item["question"], item.get("system")) for item in items]
    device = next(model.parameters()).device
    replies: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with eval_mode(model):
            for start in progress(range(0, len(prompts), batch_size), desc):
                enc = tokenizer(
                    prompts[start : start + batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(device)
                if hasattr(model, "generate"):
                    out = model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                else:  # a from-scratch wrapper (the soft prompt) is a forward pass only
                    out = greedy_without_generate(model, tokenizer, enc, max_new_tokens)
                new = out[:, enc["input_ids"].shape[1] :]
                replies += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
    finally:
        tokenizer.padding_side = side
    return replies


@torch.no_grad()
def greedy_without_generate(model, tokenizer, enc, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding by repeated forward passes (no cache), for a model without `generate`:
    positions count real tokens only, as `generate` counts them under left padding; a row
    that has produced the end-of-sequence token is padded from then on."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    for _ in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        token = logits[:, -1].argmax(-1)
        token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, (~done).long()[:, None]], 1)
        done |= token == tokenizer.eos_token_id
        if done.all():
            break
    return ids


@hands_memory_back
def evaluate_recall(
    model,
    tokenizer,
    items: list[dict],
    batch_size: int = RECALL_BATCH,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> RecallResult:
    """Recall by generation: each held-out question answered greedily, correct when the reply
    states the item's `value`."""
    with stopwatch.timed("evaluation"):  # recall is part of an evaluation's time
        replies = generate_replies(model, tokenizer, items, batch_size, max_new_tokens)
    values = [item["value"] for item in items]
    return RecallResult(
        ids=[item["id"] for item in items],
        replies=replies,
        values=values,
        correct=[states_value(r, v) for r, v in zip(replies, values)],
    )


def unrelated_questions(items: list[dict]) -> list[str]:
    """For each item, the question of another fact's item (half the list away, then onwards),
    fixed by the items' order; with a single fact, a question about no fact at all."""
    n = len(items)
    picked = []
    for i, item in enumerate(items):
        others = (items[(i + n // 2 + k) % n] for k in range(n))
        other = next((o for o in others if o.get("fact_id") != item.get("fact_id")), None)
        picked.append(other["question"] if other else CONTROL_QUESTION)
    return picked


CONTROL_QUESTION = "What's a good name for a dog?"  # used when the items cover a single fact


@hands_memory_back
def evaluate_control(model, tokenizer, items: list[dict], batch_size: int = 32) -> ChoiceResult:
    """Multiple-choice accuracy with each item's choices scored after an unrelated question:
    how much of `domain_accuracy` a model keeps without reading the question (chance is 1/4)."""
    swapped = [{**item, "question": q} for item, q in zip(items, unrelated_questions(items))]
    return evaluate_choices(model, tokenizer, swapped, batch_size, "control", DOMAIN_STYLE)


def recall_change(before, after) -> dict:
    """Recall before and after (each an `Evaluation` or a `RecallResult`) on the same items:
    levels with their errors, the change with its paired error, and the items gained and lost.
    Empty when either side was measured without recall."""
    b, a = getattr(before, "recall", before), getattr(after, "recall", after)
    if b is None or a is None:
        return {}
    if b.ids != a.ids:
        raise ValueError("before and after recall were measured on different items")
    out = {
        "domain_recall_before": b.accuracy,
        "domain_recall_after": a.accuracy,
        "domain_recall_before_stderr": b.stderr,
        "domain_recall_after_stderr": a.stderr,
        "domain_recall_change": a.accuracy - b.accuracy,
        "domain_recall_change_stderr": paired_stderr(b.correct, a.correct),
        "domain_recall_n_items": len(a.ids),
        "domain_recall_gained": sum(not x and y for x, y in zip(b.correct, a.correct)),
        "domain_recall_lost": sum(x and not y for x, y in zip(b.correct, a.correct)),
    }
    cb, ca = getattr(before, "control", None), getattr(after, "control", None)
    if cb is not None and ca is not None:
        out["domain_control_accuracy_before"] = cb.accuracy
        out["domain_control_accuracy_after"] = ca.accuracy
        out["domain_control_accuracy_stderr"] = ca.stderr
    return out
