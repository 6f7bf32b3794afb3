"""Scoring the published suite's items as lm-evaluation-harness does (see `tutorial_lib.suite`)."""

from __future__ import annotations

from tutorial_lib.evaluate import ChoiceResult
from tutorial_lib.memory.machine import hands_memory_back
from tutorial_lib.published_tasks import get_task
from tutorial_lib.scoring import score_choices, score_contexts


def _shared(item: dict) -> bool:
    return len({context for context, _ in item["requests"]}) == 1


def evaluate_task(model, tokenizer, items: list[dict], batch_size: int = 32) -> ChoiceResult:
    """One task's items scored as lm-eval does: summed log-prob (acc) and per character of
    the choice (acc_norm, where the task reports it; else the same as acc)."""
    task = get_task(items[0]["task"])
    shared = [i for i, item in enumerate(items) if _shared(item)]
    other = [i for i, item in enumerate(items) if not _shared(item)]
    scores: list = [None] * len(items)
    groups = [(items[i]["requests"][0][0], [c for _, c in items[i]["requests"]]) for i in shared]
    for i, s in zip(
        shared, score_choices(model, tokenizer, groups, max(1, batch_size // 2), task.name)
    ):
        scores[i] = s
    groups = [([c for c, _ in items[i]["requests"]], items[i]["requests"][0][1]) for i in other]
    for i, s in zip(other, score_contexts(model, tokenizer, groups, batch_size, task.name)):
        scores[i] = s
    preds, preds_norm, gold = [], [], []
    for item, item_scores in zip(items, scores):
        sums = [lp for lp, _ in item_scores]
        pick = max(range(len(sums)), key=sums.__getitem__)
        if "acc_norm" in task.metrics:
            per_char = [s / len(c) for s, c in zip(sums, item["choices"])]
            pick_norm = max(range(len(sums)), key=per_char.__getitem__)
        else:
            pick_norm = pick
        preds.append(pick)
        preds_norm.append(pick_norm)
        gold.append(sums[item["answer"]])
    return ChoiceResult(
        ids=[item["id"] for item in items],
        categories=[task.name] * len(items),
        answers=[item["answer"] for item in items],
        predictions=preds,
        predictions_norm=preds_norm,
        correct_logprobs=gold,
        chosen_texts=[item["choices"][p] for item, p in zip(items, preds)],
    )


@hands_memory_back
def evaluate_published(
    model, tokenizer, suite: dict[str, list[dict]], batch_size: int = 32
) -> dict[str, ChoiceResult]:
    """Every task of the suite (task -> its ChoiceResult)."""
    return {
        task: evaluate_task(model, tokenizer, items, batch_size) for task, items in suite.items()
    }
