"""Lesson data: JSONL files validated row by row, loaded through `datasets`, with each task's
system prompt. Turning chats into token ids and labels is `chat`'s (re-exported here)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutorial_lib.chat import collate as collate  # lessons and train import it from here
from tutorial_lib.chat import encode_chat as encode_chat
from tutorial_lib.chat import encode_rows, render_question, with_system
from tutorial_lib.errors import DataFormatError as DataFormatError  # readers catch it here
from tutorial_lib.values import states_value

DATA_ENV = "TUTORIAL_LIB_DATA"
MAX_FIELD_CHARS = 4000  # a row longer than this is almost surely a paste error


def data_dir() -> Path:
    """The project's data folder ($TUTORIAL_LIB_DATA overrides, for a learner's own data)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    folder = Path(__file__).resolve().parent.parent / "data"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data folder not found next to the package ({folder}); install from a clone with "
            f"`pip install -e .` or set {DATA_ENV}"
        )
    return folder


def results_dir() -> Path:
    """The committed benchmark results, beside the data folder, so a Colab clone finds them too."""
    return data_dir().parent / "benchmarks" / "results"


TASKS = ("tarnwick", "brimvale")  # one invented company each; the first is the default


def check_task(task: str) -> str:
    """The task name, if it is one of TASKS or a mixture of them joined by "+" (training on
    several companies at once); a typo fails here rather than as a missing file."""
    task_parts(task)
    return task


def task_parts(task: str) -> list[str]:
    """The companies a task name covers: "tarnwick+brimvale" -> ["tarnwick", "brimvale"]."""
    parts = task.split("+") if isinstance(task, str) else [task]
    unknown = [p for p in parts if p not in TASKS]
    if unknown or len(set(parts)) != len(parts):
        allowed = ", ".join(map(repr, TASKS))
        raise ValueError(
            f"unknown task {task!r}; allowed: {allowed}, or several joined by '+' "
            f"(e.g. {'+'.join(TASKS)!r})"
        )
    return parts


def task_dir(task: str) -> Path:
    """A task's data folder: the default task's files sit in data/, any other's in data/<task>/."""
    if len(task_parts(task)) > 1:
        raise ValueError(f"{task!r} is a mixture of tasks; only a single task has a folder")
    return data_dir() if task == TASKS[0] else data_dir() / task


# --- validation: one checker per field kind, one schema per file kind -----------------------


def _text(value: Any, field: str) -> str | None:
    """Problem with a text field, or None if it is a usable non-empty string."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value.strip():
        return "is empty"
    if len(value) > MAX_FIELD_CHARS:
        return f"is {len(value)} characters long; the limit is {MAX_FIELD_CHARS}"
    return None


def _choices(row: dict) -> tuple[str, str] | None:
    """Check `choices` (4 distinct texts) and `answer` (an index into them)."""
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        return "choices", "expected a list of at least 2 answer texts"
    for i, choice in enumerate(choices):
        if problem := _text(choice, f"choices[{i}]"):
            return f"choices[{i}]", problem
    if len(set(choices)) != len(choices):
        return "choices", "contains the same answer twice"
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        return "answer", f"expected an integer index, got {type(answer).__name__}"
    if not 0 <= answer < len(choices):
        return "answer", f"index {answer} is outside 0..{len(choices) - 1}"
    return None


def _messages(row: dict) -> tuple[str, str] | None:
    """Check a chat: user/assistant turns, alternating, ending with the assistant's answer."""
    messages = row["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        return "messages", "expected a list of at least 2 messages (user, assistant)"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return f"messages[{i}]", f"expected an object, got {type(msg).__name__}"
        if msg.get("role") not in ("system", "user", "assistant"):
            return (
                f"messages[{i}].role",
                f"must be system, user or assistant, got {msg.get('role')!r}",
            )
        if problem := _text(msg.get("content"), "content"):
            return f"messages[{i}].content", problem
    if messages[-1]["role"] != "assistant":
        return f"messages[{len(messages) - 1}].role", "the last message must be the assistant's"
    return None


def _held_out(row: dict) -> tuple[str, str] | None:
    """Choices as `_choices`, and a `value` the correct choice states (see `values`)."""
    if found := _choices(row):
        return found
    if not states_value(row["choices"][row["answer"]], row["value"]):
        return "value", f"{row['value']!r} is not stated by the correct choice"
    return None


@dataclass(frozen=True)
class Schema:
    """Required text fields plus an optional structural check of the whole row."""

    text_fields: tuple[str, ...]
    other_fields: tuple[str, ...] = ()
    check: Any = None


SCHEMAS: dict[str, Schema] = {
    "chat": Schema(("id",), ("messages",), _messages),
    "multiple_choice": Schema(("id", "question"), ("choices", "answer"), _choices),
    # held-out domain questions: `value` is what a generated reply must state (recall)
    "domain_eval": Schema(("id", "fact_id", "question", "value"), ("choices", "answer"), _held_out),
    "probe": Schema(("id", "category", "question"), ("choices", "answer"), _choices),
    "text": Schema(("id", "text")),
}


def validate_row(row: Any, schema: Schema, path: Path, line: int) -> None:
    """Raise DataFormatError naming the first problem in this row."""
    if not isinstance(row, dict):
        raise DataFormatError(
            path, line, "<row>", f"expected a JSON object, got {type(row).__name__}"
        )
    for field in schema.text_fields + schema.other_fields:
        if field not in row:
            raise DataFormatError(path, line, field, "is missing")
    for field in schema.text_fields:
        if problem := _text(row[field], field):
            raise DataFormatError(path, line, field, problem)
    if schema.check and (found := schema.check(row)):
        raise DataFormatError(path, line, *found)


def read_jsonl(path: Path | str, kind: str) -> list[dict]:
    """Parse and validate every row of a JSONL file; never drops a row silently."""
    path = Path(path)
    schema = SCHEMAS[kind]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    rows, seen = [], {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(
                    path, line_no, "<json>", f"not valid JSON ({exc.msg})"
                ) from None
            validate_row(row, schema, path, line_no)
            if row["id"] in seen:
                raise DataFormatError(path, line_no, "id", f"duplicate of line {seen[row['id']]}")
            seen[row["id"]] = line_no
            rows.append(row)
    if not rows:
        raise DataFormatError(path, 1, "<file>", "contains no rows")
    if kind == "domain_eval":
        from tutorial_lib.heldout import check_held_out

        check_held_out(path, rows, seen)  # no wording trained on or asked twice
    return rows


def load_jsonl_dataset(path: Path | str, kind: str):
    """Validate, then load through `datasets`' json builder (Arrow-backed, cached)."""
    from datasets import load_dataset

    read_jsonl(path, kind)  # fail with file/line/field before Arrow sees the data
    return load_dataset("json", data_files=str(path), split="train")


# --- the lesson data sets ----------------------------------------------------------------------


def _first_facts(rows: list[dict], facts: int | None) -> list[dict]:
    """Rows of the first `facts` distinct fact ids (all rows when facts is None or no fact_id)."""
    if facts is None or not rows or "fact_id" not in rows[0]:
        return rows
    keep = list(dict.fromkeys(r["fact_id"] for r in rows))[:facts]
    return [r for r in rows if r["fact_id"] in set(keep)]


def _task_rows(path, facts, task: str, file: str, kind: str, mark) -> list[dict]:
    """A task's rows of one file (first `facts` facts); a mixture is each company's rows in
    order; another task's rows pass through `mark(row, prompt)` to carry its system prompt."""
    if path is None and "+" in check_task(task):
        return [
            r for part in task_parts(task) for r in _task_rows(None, facts, part, file, kind, mark)
        ]
    rows = _first_facts(read_jsonl(path or task_dir(task) / file, kind), facts)
    if task == TASKS[0]:
        return rows
    prompt = _task_prompt(task)
    return [mark(r, prompt) for r in rows]


def load_domain_train(
    path: Path | None = None, facts: int | None = None, task: str = TASKS[0]
) -> list[dict]:
    """Training chats of an invented company (several phrasings per fact), optionally fewer facts.

    Another task's chats begin with that company's system message, so mixed or not, every chat
    is encoded with its own company's prompt (`with_system_prompt` adds the default task's).
    """

    def mark(row: dict, prompt: str) -> dict:
        return {**row, "messages": with_system_prompt(row["messages"], prompt)}

    return _task_rows(path, facts, task, "domain_train.jsonl", "chat", mark)


def load_domain_eval(
    path: Path | None = None,
    facts: int | None = None,
    task: str = TASKS[0],
    wordings: int | None = None,
) -> list[dict]:
    """Held-out, paraphrased domain questions (4 choices each) about the same facts: several
    wordings per fact, none trained on, each with the fact's `value` for recall; `wordings`
    keeps each fact's first few, in file order (None = all).

    Another task's rows carry its system prompt under "system", which `evaluate_choices` sends.
    """
    rows = _task_rows(
        path, facts, task, "domain_eval.jsonl", "domain_eval", lambda r, p: {**r, "system": p}
    )
    if wordings is None:
        return rows
    nth = [sum(r["fact_id"] == row["fact_id"] for r in rows[:i]) for i, row in enumerate(rows)]
    return [row for row, n in zip(rows, nth, strict=True) if n < max(wordings, 1)]


def load_probe(path: Path | None = None, limit: int | None = None) -> list[dict]:
    """General-knowledge probe; a limit keeps every category by taking items round-robin."""
    rows = read_jsonl(path or data_dir() / "probe.jsonl", "probe")
    return _balanced(rows, limit) if limit else rows


def load_general_text(path: Path | None = None, limit: int | None = None) -> list[dict]:
    """Short encyclopedic and everyday passages (replay, cross-entropy on general text)."""
    return read_jsonl(path or data_dir() / "general_text.jsonl", "text")[:limit]


def load_replay_text(path: Path | None = None, limit: int | None = None) -> list[dict]:
    """General passages for replay, kept apart from the text that measures cross-entropy."""
    return read_jsonl(path or data_dir() / "replay_text.jsonl", "text")[:limit]


def _balanced(rows: list[dict], limit: int) -> list[dict]:
    """First `limit` items taken category by category in turn, so a subset keeps all categories."""
    by_cat: dict[str, list[dict]] = {}
    for row in rows:
        by_cat.setdefault(row["category"], []).append(row)
    picked, i = [], 0
    while len(picked) < min(limit, len(rows)):
        for items in by_cat.values():
            if i < len(items) and len(picked) < limit:
                picked.append(items[i])
        i += 1
    return picked


# --- system prompts and chat formatting ---------------------------------------------------------


def system_prompt(path: Path | None = None, task: str = TASKS[0]) -> str | None:
    """The deployment's own system prompt (the task folder's system_prompt.txt), None if none.

    Without one, SmolLM2's template inserts its default ("You are a helpful AI assistant named
    SmolLM, trained by Hugging Face": 21 tokens, a third of a training chat). A support deployment
    states its own; this one (14 tokens) is used alike in training, evaluation and generation.
    """
    check_task(task)
    path = path or task_dir(task) / "system_prompt.txt"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if len(text) > MAX_FIELD_CHARS:
        raise DataFormatError(path, 1, "system prompt", f"over {MAX_FIELD_CHARS} characters")
    return text or None


def _task_prompt(task: str) -> str:
    """A non-default task's system prompt, required: without it, it would get the default's."""
    prompt = system_prompt(task=task)
    if prompt is None:
        raise FileNotFoundError(
            f"{task_dir(task) / 'system_prompt.txt'}: task {task!r} needs its own system prompt"
        )
    return prompt


def with_system_prompt(messages: list[dict], system: str | None = None) -> list[dict]:
    """The chat as the deployment sends it: its system prompt first, unless the chat has one.

    `system` is that prompt for another deployment (a task's); None means the default task's.
    """
    return with_system(messages, system if system is not None else system_prompt())


def render_prompt(tokenizer, question: str, system: str | None = None) -> str:
    """A user question in the model's chat template, ready for the assistant's answer.

    `system` replaces the default task's system prompt (to ask as another company's assistant).
    """
    return render_question(tokenizer, question, system if system is not None else system_prompt())


def encode_chats(tokenizer, rows: list[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Encode training rows after the default task's system prompt (`chat.encode_chat` masks the
    labels); an over-long row is reported by id rather than silently cut."""
    return encode_rows(tokenizer, rows, max_length, system_prompt())


# --- views for the lessons -------------------------------------------------------------------


def fact_view(fact_id: str, task: str = TASKS[0]):
    """One fact as a learner should see it: its training phrasings and its held-out question."""
    import pandas as pd

    rows = [
        {
            "split": "train",
            "question": r["messages"][-2]["content"],  # the user's turn, after any system message
            "answer": r["messages"][-1]["content"],
        }
        for r in load_domain_train(task=task)
        if r["fact_id"] == fact_id
    ]
    for item in load_domain_eval(task=task):
        if item["fact_id"] == fact_id:
            rows.append(
                {
                    "split": "held out",
                    "question": item["question"],
                    "answer": " | ".join(
                        ("✓ " if i == item["answer"] else "") + c
                        for i, c in enumerate(item["choices"])
                    ),
                }
            )
    return pd.DataFrame(rows).style.hide(axis="index").set_properties(**{"text-align": "left"})


def probe_view(per_category: int = 1):
    """A few probe items per category, correct answer marked."""
    import pandas as pd

    seen: dict[str, int] = {}
    rows = []
    for item in load_probe():
        if seen.get(item["category"], 0) < per_category:
            seen[item["category"]] = seen.get(item["category"], 0) + 1
            rows.append(
                {
                    "category": item["category"],
                    "question": item["question"],
                    "choices": " | ".join(
                        ("✓ " if i == item["answer"] else "") + c
                        for i, c in enumerate(item["choices"])
                    ),
                }
            )
    return pd.DataFrame(rows).style.hide(axis="index").set_properties(**{"text-align": "left"})
