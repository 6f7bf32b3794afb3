"""Checks of a held-out domain file as a whole: every wording is new (never a training
question of the same task) and asked once. Row-level checks, the `value` field among them,
are `data`'s schema "domain_eval"; `data.read_jsonl` runs these after it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tutorial_lib.errors import DataFormatError

TRAIN_FILE = "domain_train.jsonl"  # the training chats beside a held-out file


def wording(question: str) -> str:
    """A question as compared for overlap: case, spacing and end punctuation do not count."""
    return re.sub(r"\s+", " ", question.lower()).strip().rstrip("?.! ")


def _training_questions(train_path: Path) -> dict[str, tuple[str, int]]:
    """Each training question's wording -> (row id, line), read without re-validating."""
    found: dict[str, tuple[str, int]] = {}
    with open(train_path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            for msg in row.get("messages", []):
                if isinstance(msg, dict) and msg.get("role") == "user":
                    found.setdefault(wording(str(msg.get("content", ""))), (row.get("id"), line_no))
    return found


def check_held_out(path: Path, rows: list[dict], lines: dict[str, int]) -> None:
    """Raise data.DataFormatError (file, line, 'question') for a held-out question that is a
    training question of the same folder's TRAIN_FILE, or that repeats another held-out one."""
    train_path = Path(path).parent / TRAIN_FILE
    trained = _training_questions(train_path) if train_path.is_file() else {}
    asked: dict[str, int] = {}
    for row in rows:
        line, key = lines[row["id"]], wording(row["question"])
        if key in trained:
            train_id, train_line = trained[key]
            raise DataFormatError(
                path,
                line,
                "question",
                f"is training row {train_id!r}'s question ({train_path.name}, line "
                f"{train_line}); a held-out wording must never be trained on",
            )
        if key in asked:
            raise DataFormatError(path, line, "question", f"repeats line {asked[key]}'s question")
        asked[key] = line
