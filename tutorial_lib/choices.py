"""Multiple-choice scoring: each choice's log-likelihood as the answer to its question, the
likeliest chosen (lm-evaluation-harness's acc and acc_norm), and the paired standard error of a
change measured on the same items."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tutorial_lib.data import render_prompt
from tutorial_lib.memory.machine import hands_memory_back
from tutorial_lib.scoring import score_choices

PROBE_STYLE = "plain"  # general knowledge, asked the way lm-evaluation-harness asks
DOMAIN_STYLE = "chat"  # the domain is trained as chat, so it is asked as chat


@dataclass
class ChoiceResult:
    """Per-item multiple-choice outcomes; accuracy and friends are computed from these."""

    ids: list[str]
    categories: list[str]
    answers: list[int]
    predictions: list[int]  # argmax of summed log-prob
    predictions_norm: list[int]  # argmax of log-prob per character (lm-eval's acc_norm)
    correct_logprobs: list[float]  # log p(correct answer | question)
    chosen_texts: list[str] = field(default_factory=list)

    @property
    def correct(self) -> list[bool]:
        return [p == a for p, a in zip(self.predictions, self.answers)]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.answers)

    @property
    def accuracy_norm(self) -> float:
        return sum(p == a for p, a in zip(self.predictions_norm, self.answers)) / len(self.answers)

    @property
    def stderr(self) -> float:
        """Standard error of the accuracy (binomial): the "±" to quote beside it."""
        p = self.accuracy
        return math.sqrt(p * (1 - p) / len(self.answers))

    @property
    def mean_logprob(self) -> float:
        return sum(self.correct_logprobs) / len(self.correct_logprobs)

    def by_category(self) -> dict[str, float]:
        """Accuracy per category, in the order categories first appear."""
        totals: dict[str, list[int]] = {}
        for cat, ok in zip(self.categories, self.correct):
            totals.setdefault(cat, [0, 0])
            totals[cat][0] += ok
            totals[cat][1] += 1
        return {cat: right / n for cat, (right, n) in totals.items()}


def question_prompt(
    tokenizer, question: str, style: str, system: str | None = None
) -> tuple[str, str]:
    """Context and the delimiter before each choice, in one of two prompt styles.

    "chat": the question as a user turn, choices scored as the assistant's reply (how the
    domain is trained and asked), after `system` (None: the default task's system prompt).
    "plain": `Question: …\nAnswer:` + " choice", the lm-evaluation-harness convention; it
    measures knowledge apart from chat formatting and, measured on the base model, scores
    higher on the probe and runs 3x faster (no system prompt, so `system` is not used).
    """
    if style == "chat":
        return render_prompt(tokenizer, question, system), ""
    if style == "plain":
        return f"Question: {question}\nAnswer:", " "
    raise ValueError(f"unknown prompt style {style!r}; allowed: 'chat', 'plain'")


@hands_memory_back
def evaluate_choices(
    model,
    tokenizer,
    items: list[dict],
    batch_size: int = 32,
    desc: str = "multiple choice",
    style: str = "chat",
) -> ChoiceResult:
    """Score every choice of every item as the answer to its question; pick the likeliest.

    An item's "system" (another task's system prompt, see `data.load_domain_eval`) is sent with it.
    """
    prompts = [
        question_prompt(tokenizer, item["question"], style, item.get("system")) for item in items
    ]
    groups = [(p, [sep + c for c in item["choices"]]) for (p, sep), item in zip(prompts, items)]
    # batch_size counts sequences; a group is one context plus its choices (about 2 sequences' work)
    scores = score_choices(model, tokenizer, groups, max(1, batch_size // 2), desc)
    preds, preds_norm, gold_lp, chosen = [], [], [], []
    for item, item_scores in zip(items, scores):
        sums = [lp for lp, _ in item_scores]
        per_char = [s / len(c) for s, c in zip(sums, item["choices"])]
        preds.append(max(range(len(sums)), key=sums.__getitem__))
        preds_norm.append(max(range(len(sums)), key=per_char.__getitem__))
        gold_lp.append(sums[item["answer"]])
        chosen.append(item["choices"][preds[-1]])
    return ChoiceResult(
        ids=[item["id"] for item in items],
        categories=[item.get("category", "domain") for item in items],
        answers=[item["answer"] for item in items],
        predictions=preds,
        predictions_norm=preds_norm,
        correct_logprobs=gold_lp,
        chosen_texts=chosen,
    )


def paired_stderr(before: list[bool], after: list[bool]) -> float:
    """Standard error of an accuracy change measured on the same items (paired, as McNemar):
    only items that flipped carry information, so it is smaller than two independent errors."""
    n = len(before)
    diffs = [int(a) - int(b) for b, a in zip(before, after)]
    mean = sum(diffs) / n
    return math.sqrt(max(0.0, sum(d * d for d in diffs) / n - mean * mean) / n)
