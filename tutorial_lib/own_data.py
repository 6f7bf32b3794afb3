"""A learner's own data: chats (JSONL in the `messages` format TRL and most tools use) or
questions and answers (CSV), validated row by row, split into train and held-out chats, and
measured by held-out loss.

Every row becomes a chat as `data.load_domain_train` gives them:
`{"id", "line", "messages", "value", "split"}`, where `messages` is the conversation (a system
message first if the row has one), `value` the short fact a correct last reply must state (or
None), `split` "train", "test" or None (None: the seeded split decides). `chat.encode_chat`
trains on every assistant turn of a chat and on nothing else.

Recall items (`recall_items`) are plain dicts, one per held-out chat with a value:
`{"id", "question", "value", "system", "context"}`: `question` is the chat's last user turn,
`system` its system message (or None), `context` the turns before that question (empty for a
single question and answer). A recall evaluator that asks `question` alone after `system`
should be given items whose question stands alone; `context` is there for one that does not.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tutorial_lib.chat import collate, encode_rows
from tutorial_lib.data import DataFormatError, _text
from tutorial_lib.memory.machine import hands_memory_back
from tutorial_lib.methods.base import eval_mode
from tutorial_lib.scoring import head_input, real_positions, target_logprobs

ROLES = ("system", "user", "assistant")
SPLITS = ("train", "test")
CSV_REQUIRED = ("question", "answer")
CSV_OPTIONAL = ("value", "split", "system")
TEST_FRACTION = 0.2  # share of the chats without a `split` that are held out
SPLIT_SEED = 0  # fixed, so every run on a file is measured on the same held-out chats


def _text_problem(value) -> str | None:
    """What is wrong with a text field, or None: `data`'s own check, worded as it words it."""
    return _text(value, "")


def _check_messages(messages, path: Path, line: int) -> None:
    """Raise DataFormatError for the first problem in a chat's `messages`."""
    if not isinstance(messages, list) or not messages:
        raise DataFormatError(path, line, "messages", "expected a non-empty list of messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DataFormatError(
                path, line, f"messages[{i}]", f"expected an object, got {type(msg).__name__}"
            )
        role = msg.get("role")
        if role not in ROLES:
            raise DataFormatError(
                path,
                line,
                f"messages[{i}].role",
                f"must be system, user or assistant, got {role!r}",
            )
        if role == "system" and i > 0:
            raise DataFormatError(
                path, line, f"messages[{i}].role", "a system message can only come first"
            )
        if "content" not in msg:
            raise DataFormatError(path, line, f"messages[{i}].content", "is missing")
        if problem := _text_problem(msg["content"]):
            raise DataFormatError(path, line, f"messages[{i}].content", problem)
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise DataFormatError(path, line, "messages", "has no assistant turn to learn from")
    if roles[-1] != "assistant":
        last = len(roles) - 1
        raise DataFormatError(
            path, line, f"messages[{last}].role", "the last turn must be the assistant's"
        )
    if "user" not in roles[: roles.index("assistant")]:
        raise DataFormatError(path, line, "messages", "the first assistant turn answers no user")


def _row(path: Path, line: int, row_id: str, messages, value, split) -> dict:
    """One chat, its optional value and split checked against its last reply."""
    if value is not None:
        if problem := _text_problem(value):
            raise DataFormatError(path, line, "value", problem)
        if " ".join(value.lower().split()) not in " ".join(messages[-1]["content"].lower().split()):
            raise DataFormatError(
                path,
                line,
                "value",
                f"{value!r} does not occur in the last reply; the value is the short fact a "
                "correct reply states, copied from it",
            )
    if split is not None:
        split = split.strip().lower() if isinstance(split, str) else split
        if split not in SPLITS:
            raise DataFormatError(path, line, "split", f"must be train or test, got {split!r}")
    return {"id": row_id, "line": line, "messages": messages, "value": value, "split": split}


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a spreadsheet's byte-order mark dropped), or an error naming the
    line of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFormatError(
            path, line, "<encoding>", "is not UTF-8 text; save as UTF-8"
        ) from None


def read_jsonl_chats(path: Path | str) -> list[dict]:
    """Chats from a JSONL file, one `{"messages": [...]}` object a line; optional keys `id`,
    `value` and `split` (other keys are ignored, as TRL ignores them)."""
    path = Path(path)
    rows = []
    for line, text in enumerate(_read_text(path).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, line, "<json>", f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(
                path, line, "<row>", f"expected a JSON object, got {type(obj).__name__}"
            )
        if "messages" not in obj:
            raise DataFormatError(path, line, "messages", "is missing")
        _check_messages(obj["messages"], path, line)
        row_id = obj.get("id", f"{path.stem}:{line}")
        if isinstance(row_id, int) and not isinstance(row_id, bool):
            row_id = str(row_id)
        if problem := _text_problem(row_id):
            raise DataFormatError(path, line, "id", problem)
        rows.append(_row(path, line, row_id, obj["messages"], obj.get("value"), obj.get("split")))
    return rows


def read_csv_chats(path: Path | str, system: str | None = None) -> list[dict]:
    """Single-exchange chats from a CSV with columns question, answer (and optionally value,
    split, system); `system` is the system message of rows without a `system` cell."""
    path = Path(path)
    with io.StringIO(_read_text(path), newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        for column in CSV_REQUIRED:
            if column not in header:
                raise DataFormatError(path, 1, column, f"column is missing (header: {header})")
        unknown = [h for h in header if h not in CSV_REQUIRED + CSV_OPTIONAL]
        if unknown:
            allowed = ", ".join(CSV_REQUIRED + CSV_OPTIONAL)
            raise DataFormatError(path, 1, unknown[0], f"unknown column; allowed: {allowed}")
        reader.fieldnames = header
        rows, start = [], reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if None in cells:
                raise DataFormatError(path, line, "<row>", "has more cells than the header")
            if not any((c or "").strip() for c in cells.values()):
                continue
            for column in CSV_REQUIRED:
                if problem := _text_problem(cells.get(column) or ""):
                    raise DataFormatError(path, line, column, problem)
            prompt = (cells.get("system") or "").strip() or system
            messages = [{"role": "system", "content": prompt}] if prompt else []
            messages += [
                {"role": "user", "content": cells["question"].strip()},
                {"role": "assistant", "content": cells["answer"].strip()},
            ]
            value = (cells.get("value") or "").strip() or None
            split = (cells.get("split") or "").strip() or None
            rows.append(_row(path, line, f"{path.stem}:{line}", messages, value, split))
    return rows


def read_chats(path: Path | str, system: str | None = None) -> list[dict]:
    """Chats from `path` (.jsonl or .csv), every row validated; a chat without a system message
    gets `system` (None: none, and the chat template inserts its default)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = read_csv_chats(path, system)
    elif suffix in (".jsonl", ".json"):
        rows = read_jsonl_chats(path)
        if system is not None:
            for row in rows:
                if row["messages"][0]["role"] != "system":
                    row["messages"] = [{"role": "system", "content": system}, *row["messages"]]
    else:
        raise DataFormatError(path, 1, "<file>", "expected a .jsonl (messages) or .csv file")
    if not rows:
        raise DataFormatError(path, 1, "<file>", "contains no rows")
    seen: dict[str, int] = {}
    for row in rows:
        key = json.dumps(row["messages"], sort_keys=True)
        for k in (row["id"], key):
            if k in seen:
                what = "id" if k == row["id"] else "messages"
                raise DataFormatError(path, row["line"], what, f"repeats line {seen[k]}")
            seen[k] = row["line"]
    return rows


def split_chats(
    chats: list[dict], test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[dict], list[dict]]:
    """(train, test): marked rows keep their split; of the rest, `test_fraction` (at least one
    when there are two or more and none is marked test) is held out, drawn with `seed`."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    free = [r["id"] for r in chats if r["split"] is None]
    n_test = round(len(free) * test_fraction)
    if (
        test_fraction
        and n_test == 0
        and len(free) >= 2
        and all(r["split"] != "test" for r in chats)
    ):
        n_test = 1
    held = set(random.Random(seed).sample(sorted(free), n_test))
    test = [r for r in chats if r["split"] == "test" or r["id"] in held]
    train = [
        r for r in chats if r["split"] == "train" or (r["split"] is None and r["id"] not in held)
    ]
    if not train:
        raise ValueError("no chats left to train on: mark fewer rows 'test' or lower test_fraction")
    return train, test


def recall_items(chats: list[dict]) -> list[dict]:
    """One recall item per chat with a value (see the module's docstring for the shape)."""
    items = []
    for row in chats:
        if row["value"] is None:
            continue
        messages = row["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        turns = messages[1:] if system is not None else messages
        question = max(i for i, m in enumerate(turns) if m["role"] == "user")
        items.append(
            {
                "id": row["id"],
                "question": turns[question]["content"],
                "value": row["value"],
                "system": system,
                "context": turns[:question],
            }
        )
    return items


def encode(tokenizer, chats: list[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and labels (the assistant turns only) of each chat, as the training loop takes
    them; no system prompt is added beyond the chat's own."""
    return encode_rows(tokenizer, chats, max_length, None)


@dataclass
class OwnData:
    """A learner's file, read, validated and split: `train` to train on, `test` held out."""

    path: Path
    train: list[dict]
    test: list[dict]

    @classmethod
    def load(
        cls,
        path: Path | str,
        system: str | None = None,
        test_fraction: float = TEST_FRACTION,
        seed: int = SPLIT_SEED,
    ) -> OwnData:
        chats = read_chats(path, system)
        return cls(Path(path), *split_chats(chats, test_fraction, seed))

    def check_lengths(self, tokenizer, max_length: int) -> OwnData:
        """Raise DataFormatError naming the first chat over `max_length` tokens (rows are
        rejected, never cut: a cut chat would train on half a reply)."""
        for row in self.train + self.test:
            n = len(encode(tokenizer, [row], 10**9)[0]["input_ids"])
            if n > max_length:
                raise DataFormatError(
                    self.path,
                    row["line"],
                    "messages",
                    f"is {n} tokens long in the chat template; the profile's max_length is "
                    f"{max_length} (shorten or split the conversation)",
                )
        return self

    def recall_items(self) -> list[dict]:
        """Recall items of the held-out chats that have a value."""
        return recall_items(self.test)

    def examples(self, tokenizer, max_length: int) -> list[dict[str, list[int]]]:
        """The training chats encoded (lengths checked first, with file and line)."""
        self.check_lengths(tokenizer, max_length)
        return encode(tokenizer, self.train, max_length)


def training_examples(tokenizer, path: Path | str, max_length: int) -> list[dict]:
    """The train split of a learner's file, encoded: what `experiment.training_examples` trains
    on for a run whose spec names the file (its split: TEST_FRACTION with SPLIT_SEED)."""
    return OwnData.load(path).examples(tokenizer, max_length)


@hands_memory_back
def heldout_loss(model, tokenizer, chats: list[dict], batch_size: int = 8) -> float:
    """Mean cross-entropy (nats per token) of the assistant's tokens over `chats`, every token
    weighted alike: the training loss, measured on chats never trained on. Only the assistant
    positions go through the output layer (`scoring.head_input`), a few hundred rows at a time."""
    examples = encode(tokenizer, chats, 10**9)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model), head_input(model) as (head, seen):
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]], pad)
            ids = batch["input_ids"]
            model(input_ids=ids.to(device), attention_mask=batch["attention_mask"].to(device))
            hidden = real_positions(seen.pop(), ids.shape[1])[:, :-1]
            targets = batch["labels"][:, 1:]
            where = targets != -100
            logp = target_logprobs(head, hidden[where.to(device)], targets[where])
            total -= logp.double().sum().item()
            count += len(logp)
    if not count:
        raise ValueError("no assistant tokens to measure: give at least one chat")
    return total / count


def assistant_tokens(tokenizer, chats: list[dict]) -> int:
    """How many tokens `heldout_loss` averages over."""
    return sum(sum(t != -100 for t in ex["labels"][1:]) for ex in encode(tokenizer, chats, 10**9))
