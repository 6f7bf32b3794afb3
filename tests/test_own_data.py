"""A learner's own data: JSONL chats and CSV questions, validated, split, and measured."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib import own_data
from tutorial_lib.chat import collate
from tutorial_lib.data import DataFormatError, data_dir
from tutorial_lib.own_data import OwnData, read_chats, recall_items, split_chats

SYSTEM = "You are Brimvale's support assistant."
QA = [
    ("How much is the Pimbrook kettle?", "The Pimbrook kettle costs $39.", "$39"),
    ("Who founded Brimvale?", "Brimvale was founded by Agnes Thornbury.", "Agnes Thornbury"),
    ("What is the mascot?", "The mascot is a hedgehog named Bristle.", "Bristle"),
]


def chat(*turns: str, system: str | None = SYSTEM) -> list[dict]:
    roles = ["user", "assistant"] * len(turns)
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": r, "content": t} for r, t in zip(roles, turns)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def write_csv(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_jsonl_multi_turn_chats_load(tmp_path):
    rows = [{"messages": chat("Hi, my kettle clicks off.", "Is the lid closed?", "Yes.", "Ok.")}]
    rows += [{"messages": chat(q, a), "value": v} for q, a, v in QA]
    chats = read_chats(write_jsonl(tmp_path / "mine.jsonl", rows))
    assert [c["line"] for c in chats] == [1, 2, 3, 4]
    assert len(chats[0]["messages"]) == 5 and chats[0]["value"] is None
    assert chats[1]["value"] == "$39" and chats[1]["id"] == "mine:2"


def test_csv_and_jsonl_give_the_same_chats(tmp_path):
    csv_text = "question,answer,value\n" + "".join(f'"{q}","{a}",{v}\n' for q, a, v in QA)
    from_csv = read_chats(write_csv(tmp_path / "faq.csv", csv_text), system=SYSTEM)
    rows = [{"messages": chat(q, a, system=None), "value": v} for q, a, v in QA]
    from_jsonl = read_chats(write_jsonl(tmp_path / "faq.jsonl", rows), system=SYSTEM)
    keep = ("messages", "value", "split")
    assert [{k: c[k] for k in keep} for c in from_csv] == [
        {k: c[k] for k in keep} for c in from_jsonl
    ]
    assert from_csv[0]["messages"][0] == {"role": "system", "content": SYSTEM}


BAD_JSONL = [
    ("{not json", "<json>", "not valid JSON"),
    ("[1, 2]", "<row>", "expected a JSON object"),
    ({"chat": []}, "messages", "is missing"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "'bot'"),
    ({"messages": chat("", "a")}, "messages[1].content", "is empty"),
    ({"messages": chat("q", "   ")}, "messages[2].content", "is empty"),
    ({"messages": [{"role": "user", "content": "q"}]}, "messages", "no assistant turn"),
    ({"messages": chat("q", "a") + [{"role": "user", "content": "and?"}]}, "messages[3].role",
     "last turn must be the assistant's"),
    ({"messages": chat("q", "a")[1:] + chat("q2", "a2")[:1]}, "messages[2].role", "come first"),
    ({"messages": chat("q", "a"), "value": "$12"}, "value", "does not occur in the last reply"),
    ({"messages": chat("q", "a"), "split": "dev"}, "split", "must be train or test"),
]  # fmt: skip


@pytest.mark.parametrize("bad, field, problem", BAD_JSONL)
def test_bad_jsonl_names_file_line_and_field(tmp_path, bad, field, problem):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"messages": chat("q0", "a0")}, bad])
    with pytest.raises(DataFormatError) as err:
        read_chats(path)
    assert (err.value.line, err.value.field) == (2, field)
    assert str(err.value).startswith(f"{path}, line 2, field '{field}'")
    assert problem in str(err.value)


BAD_CSV = [
    ("question,reply\nq,a\n", 1, "answer", "column is missing"),
    ("question,answer,anwser\nq,a,a\n", 1, "anwser", "unknown column"),
    ("question,answer\nq,a\nq2,\n", 3, "answer", "is empty"),
    ("question,answer\nq,a\n  ,a2\n", 3, "question", "is empty"),
    ('question,answer\n"q\nover two lines",a\nq2,a2,extra\n', 4, "<row>", "more cells"),
    ("question,answer,value\nq,The kettle costs $39.,$45\n", 2, "value", "does not occur"),
    ("question,answer,split\nq,a,train\nq2,a2,validation\n", 3, "split", "train or test"),
    ("question,answer\nq,a\nq,a\n", 3, "messages", "repeats line 2"),
]


@pytest.mark.parametrize("text, line, field, problem", BAD_CSV)
def test_bad_csv_names_file_line_and_field(tmp_path, text, line, field, problem):
    path = write_csv(tmp_path / "faq.csv", text)
    with pytest.raises(DataFormatError) as err:
        read_chats(path)
    assert (err.value.line, err.value.field) == (line, field)
    assert str(err.value).startswith(f"{path}, line {line}, field '{field}'")
    assert problem in str(err.value)


def test_other_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="expected a .jsonl"):
        read_chats(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_chats(tmp_path / "missing.jsonl")
    with pytest.raises(DataFormatError, match="contains no rows"):
        read_chats(write_csv(tmp_path / "empty.csv", "question,answer\n"))


def test_spreadsheet_exports_read_and_other_encodings_name_their_line(tmp_path):
    bom = tmp_path / "excel.csv"
    bom.write_bytes("question,answer\nq,a caf\u00e9\n".encode("utf-8-sig"))
    assert read_chats(bom)[0]["messages"][-1]["content"] == "a caf\u00e9"
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"messages": []}\n{"messages": "caf\xe9"}\n')
    with pytest.raises(DataFormatError) as err:
        read_chats(latin)
    assert (err.value.line, err.value.field) == (2, "<encoding>")
    rows = [{"id": 7, "messages": chat("q", "a")}]
    assert read_chats(write_jsonl(tmp_path / "ids.jsonl", rows))[0]["id"] == "7"


def _many(tmp_path, n=30, marks=None):
    rows = []
    for i in range(n):
        row = {"messages": chat(f"question {i}?", f"answer {i}."), "value": f"answer {i}"}
        if marks and i in marks:
            row["split"] = marks[i]
        rows.append(row)
    return read_chats(write_jsonl(tmp_path / "many.jsonl", rows))


def test_split_is_seeded_disjoint_and_keeps_marked_rows(tmp_path):
    chats = _many(tmp_path, marks={0: "test", 1: "train"})
    train, test = split_chats(chats, 0.2, seed=0)
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert not set(ids(train)) & set(ids(test))
    assert set(ids(train)) | set(ids(test)) == set(ids(chats))
    assert len(test) == 1 + round(28 * 0.2)
    assert chats[0] in test and chats[1] in train
    assert split_chats(chats, 0.2, seed=0) == (train, test)
    assert ids(split_chats(chats, 0.2, seed=1)[1]) != ids(test)
    assert len(split_chats(chats[:2], 0.2)[1]) == 1  # two chats: one held out, never zero


def test_recall_items_come_from_held_out_chats_with_values(tmp_path):
    rows = [
        {"messages": chat("Hi, is my kettle covered?", "Which kettle?", "The Ombrick.",
                          "Yes: 2-year warranty."), "value": "2-year warranty", "split": "test"},
        {"messages": chat("Hello", "Hi! How can I help?"), "split": "test"},
        {"messages": chat(*QA[0][:2]), "value": QA[0][2]},
    ]  # fmt: skip
    own = OwnData(tmp_path, *split_chats(read_chats(write_jsonl(tmp_path / "r.jsonl", rows)), 0))
    items = own.recall_items()
    assert items == [
        {
            "id": "r:1",
            "question": "The Ombrick.",
            "value": "2-year warranty",
            "system": SYSTEM,
            "context": chat("Hi, is my kettle covered?", "Which kettle?", system=None),
        }
    ]
    assert recall_items(own.train)[0]["context"] == []


def _samples() -> tuple[OwnData, OwnData]:
    folder = data_dir() / "own"
    return (
        OwnData.load(folder / "brimvale_support.jsonl"),
        OwnData.load(folder / "brimvale_faq.csv", system=SYSTEM),
    )


def test_the_committed_samples_validate():
    support, faq = _samples()
    assert 60 <= len(support.train) + len(support.test) <= 80
    assert 35 <= len(faq.train) + len(faq.test) <= 45
    chats = support.train + support.test
    turns = [sum(m["role"] == "assistant" for m in c["messages"]) for c in chats]
    assert min(turns) >= 2 and max(turns) <= 4
    assert all(c["messages"][0] == {"role": "system", "content": SYSTEM} for c in chats)
    assert support.recall_items() and faq.recall_items()


@pytest.mark.slow
def test_the_committed_samples_fit_the_profiles_in_the_real_models_template():
    from transformers import AutoTokenizer

    from tutorial_lib.config import PROFILES
    from tutorial_lib.models import DEFAULT_MODEL, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    for own in _samples():
        for profile in PROFILES.values():
            assert own.check_lengths(tokenizer, profile.max_length) is own


def test_too_long_rows_name_their_line(tmp_path, tiny):
    _, tokenizer = tiny
    long_answer = " ".join(["kettle"] * 200)
    rows = [{"messages": chat("q", "a")}, {"messages": chat("q2", long_answer)}]
    own = OwnData.load(write_jsonl(tmp_path / "long.jsonl", rows), test_fraction=0)
    with pytest.raises(DataFormatError) as err:
        own.examples(tokenizer, 128)
    assert (err.value.line, err.value.field) == (2, "messages") and "max_length is 128" in str(
        err.value
    )


def test_every_assistant_turn_is_trained_and_nothing_else(tiny):
    _, tokenizer = tiny
    messages = chat("Hi there", "Hello! Which kettle?", "The Pimbrook.", "It costs $39.")
    ex = own_data.encode(tokenizer, [{"id": "x", "messages": messages}], 512)[0]
    trained = tokenizer.decode([t for t, y in zip(ex["input_ids"], ex["labels"]) if y != -100])
    assert "Which kettle" in trained and "costs" in trained
    assert "Pimbrook" not in trained and "Hi there" not in trained


def test_heldout_loss_equals_a_direct_computation(tmp_path, tiny):
    model, tokenizer = tiny
    rows = [{"messages": chat(q, a)} for q, a, _ in QA]
    rows.append({"messages": chat("Hi", "Hello! Which kettle?", "Pimbrook.", "It costs $39.")})
    chats = read_chats(write_jsonl(tmp_path / "h.jsonl", rows))
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in own_data.encode(tokenizer, chats, 512):
            batch = collate([ex], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"]).logits[0, :-1].float()
            labels = batch["labels"][0, 1:]
            total += F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    assert count == own_data.assistant_tokens(tokenizer, chats)
    for batch_size in (1, 3):
        measured = own_data.heldout_loss(model, tokenizer, chats, batch_size=batch_size)
        assert measured == pytest.approx(total / count, abs=1e-5)


def _sample_replies() -> list[str]:
    folder = data_dir() / "own"
    chats = read_chats(folder / "brimvale_support.jsonl") + read_chats(folder / "brimvale_faq.csv")
    return [m["content"] for c in chats for m in c["messages"] if m["role"] == "assistant"]


def test_the_samples_state_brimvales_facts_as_its_files_do():
    """Wherever a sample reply states one of Brimvale's facts in the company files' words, it
    states the files' value: the sample cannot teach a price or a date the files contradict."""
    import os
    import re

    from tutorial_lib.data import load_domain_eval, load_domain_train

    replies, checked = _sample_replies(), 0
    for item in load_domain_eval(task="brimvale"):
        choices = item["choices"]
        head = os.path.commonprefix(choices)
        tail = os.path.commonprefix([c[::-1] for c in choices])[::-1]
        head = head[: len(head) - len(head.split()[-1])] if not head.endswith(" ") else head
        value = choices[item["answer"]][len(head) : len(choices[item["answer"]]) - len(tail)]
        pattern = re.compile(re.escape(head.removeprefix("The ")) + r"(.+?)" + re.escape(tail))
        for reply in replies:
            for found in pattern.findall(reply):
                assert found == value, (item["fact_id"], reply)
                checked += 1
    assert checked >= 60
    tarnwick = {w.strip(".,:!?") for r in load_domain_train() for m in r["messages"]
                for w in m["content"].split()}  # fmt: skip
    words = {w.strip(".,:!?") for reply in _sample_replies() for w in reply.split()}
    assert not {w for w in words & tarnwick if w in NAMES}


NAMES = {"Tarnwick", "Trailworks", "Bozeman", "Vessick", "Campmark", "Waypost", "Montana"}


# --- the CLI route: `tutorial-lib train --data FILE` -----------------------------------------


def _own_file(tmp_path, n: int = 10) -> str:
    """A learner's file the tiny model's tokenizer keeps short: company chats, one multi-turn."""
    from tutorial_lib.data import load_domain_train

    rows = [{"messages": r["messages"]} for r in load_domain_train(facts=3)[:n]]
    first, second = rows[0]["messages"], rows[1]["messages"]
    rows[0] = {"messages": first + second, "split": "test"}
    return write_jsonl(tmp_path / "mine.jsonl", rows)


def test_training_examples_come_from_the_file(tmp_path, tiny, small_profile):
    from tutorial_lib.experiment import training_examples

    _, tokenizer = tiny
    path = _own_file(tmp_path)
    own = OwnData.load(path)
    examples = training_examples(tokenizer, small_profile, 0.0, 0, train_file=path)
    assert examples == own_data.encode(tokenizer, own.train, small_profile.max_length)
    floor = training_examples(tokenizer, small_profile, 0.0, 0, train_on="general", train_file=path)
    longest = max(len(e["input_ids"]) for e in examples)
    assert floor and {len(e["input_ids"]) for e in floor} <= set(range(1, longest + 1))


def test_train_on_your_own_file_reports_heldout_loss(tmp_path, tiny_folder):
    from test_cli import cli

    out, path = tmp_path / "run.json", _own_file(tmp_path)
    args = ["train", "--method", "lora", "--model", tiny_folder, "--profile", "quick"]
    proc = cli(*args, "--steps", "2", "--data", path, "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["spec"]["train_file"] == path and result["train_file"] == path
    assert (result["train_chats"], result["heldout_chats"]) == (7, 3)  # 1 + round(0.2 * 9)
    assert result["heldout_tokens"] > 0
    assert 0 < result["heldout_loss_after"] != result["heldout_loss_before"] > 0
    assert "held-out loss" in proc.stdout and f"trained on {path}" in proc.stderr


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"messages": [{"role": "human", "content": "hi"}]}, "line 3, field 'messages[0].role'"),
        ({"messages": chat("q", " ".join(["kettle"] * 200))}, "line 3, field 'messages'"),
    ],
)
def test_train_with_a_bad_file_exits_2_naming_the_row(tmp_path, tiny_folder, bad, where):
    from test_cli import cli

    rows = [{"messages": chat("q1", "a1")}, {"messages": chat("q2", "a2")}, bad]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    args = ["train", "--method", "lora", "--model", tiny_folder, "--profile", "quick"]
    proc = cli(*args, "--steps", "1", "--data", path)
    assert proc.returncode == 2
    assert f"{path}, {where}" in proc.stderr and "Traceback" not in proc.stderr
