"""The lesson data is valid and honest; malformed rows fail with file, line and field."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tutorial_lib import data
from tutorial_lib.data import DataFormatError, collate, encode_chat, read_jsonl


def test_data_sets_have_the_promised_sizes():
    train = data.load_domain_train()
    held_out = data.load_domain_eval()
    probe = data.load_probe()
    general = data.load_general_text()
    assert len(train) >= 400 and len(held_out) >= 100
    assert len(probe) >= 300 and len({p["category"] for p in probe}) >= 8
    assert len(general) >= 200


def test_a_profile_can_ask_fewer_wordings_of_each_fact():
    every = data.load_domain_eval(facts=3)
    two = data.load_domain_eval(facts=3, wordings=2)
    assert Counter(r["fact_id"] for r in every) == Counter({f: 4 for f in ("f001", "f002", "f003")})
    assert Counter(r["fact_id"] for r in two) == Counter({f: 2 for f in ("f001", "f002", "f003")})
    for fact in ("f001", "f002", "f003"):  # each fact's first two, in the file's order
        assert [r for r in two if r["fact_id"] == fact] == [
            r for r in every if r["fact_id"] == fact
        ][:2]
    assert data.load_domain_eval(facts=3, wordings=None) == every


def test_a_profile_rejects_no_wordings():
    from tutorial_lib.config import get_profile

    with pytest.raises(ValueError, match="heldout_wordings"):
        get_profile("quick").with_overrides(heldout_wordings=0)


def test_held_out_questions_never_appear_in_training():
    train_questions = {r["messages"][0]["content"].lower() for r in data.load_domain_train()}
    for item in data.load_domain_eval():
        assert item["question"].lower() not in train_questions, item["id"]


def test_every_held_out_fact_is_taught_in_several_phrasings():
    by_fact: dict[str, list[dict]] = {}
    for row in data.load_domain_train():
        by_fact.setdefault(row["fact_id"], []).append(row)
    for item in data.load_domain_eval():
        rows = by_fact[item["fact_id"]]
        assert len({r["messages"][0]["content"] for r in rows}) >= 3, item["id"]
        answers = {r["messages"][-1]["content"] for r in rows}
        assert item["choices"][item["answer"]] in answers, item["id"]
        distractors = set(item["choices"]) - {item["choices"][item["answer"]]}
        assert not distractors & answers, item["id"]


def test_answer_positions_are_not_guessable():
    for items in (data.load_domain_eval(), data.load_probe()):
        counts = Counter(item["answer"] for item in items)
        assert max(counts.values()) / len(items) < 0.35  # chance is 0.25


def test_probe_subset_keeps_every_category():
    subset = data.load_probe(limit=40)
    assert len(subset) == 40
    assert len({p["category"] for p in subset}) == len({p["category"] for p in data.load_probe()})


def test_datasets_json_builder_loads_every_row():
    path = data.data_dir() / "probe.jsonl"
    ds = data.load_jsonl_dataset(path, "probe")
    assert ds.num_rows == len(data.load_probe())
    assert set(ds.column_names) >= {"id", "category", "question", "choices", "answer"}


GOOD_MC = {"id": "x1", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1}
BAD_ROWS = [
    ("not json at all", "<json>"),
    (json.dumps([1, 2]), "<row>"),
    (json.dumps({k: v for k, v in GOOD_MC.items() if k != "question"}), "question"),
    (json.dumps({**GOOD_MC, "question": "   "}), "question"),
    (json.dumps({**GOOD_MC, "question": 7}), "question"),
    (json.dumps({**GOOD_MC, "choices": "abcd"}), "choices"),
    (json.dumps({**GOOD_MC, "choices": ["a", "", "c", "d"]}), "choices[1]"),
    (json.dumps({**GOOD_MC, "choices": ["a", "a", "c", "d"]}), "choices"),
    (json.dumps({**GOOD_MC, "answer": 4}), "answer"),
    (json.dumps({**GOOD_MC, "answer": "1"}), "answer"),
    (json.dumps({**GOOD_MC, "answer": True}), "answer"),
    (json.dumps({**GOOD_MC, "question": "x" * 5000}), "question"),
]


@pytest.mark.parametrize("bad_line, field", BAD_ROWS)
def test_malformed_row_names_file_line_and_field(tmp_path, bad_line, field):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(GOOD_MC) + "\n" + bad_line + "\n")
    with pytest.raises(DataFormatError) as err:
        read_jsonl(path, "multiple_choice")
    assert (err.value.path, err.value.line, err.value.field) == (path, 2, field)
    assert str(path) in str(err.value) and "line 2" in str(err.value)


@pytest.mark.parametrize(
    "messages, field",
    [
        ([{"role": "user", "content": "hi"}], "messages"),
        ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], "messages[1].role"),
        (
            [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}],
            "messages[1].role",
        ),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}],
            "messages[1].content",
        ),
        ([{"role": "user", "content": "hi"}, "yo"], "messages[1]"),
    ],
)
def test_malformed_chat_rows(tmp_path, messages, field):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"id": "c1", "messages": messages}) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_jsonl(path, "chat")
    assert err.value.field == field and err.value.line == 1


def test_duplicate_ids_and_empty_files_are_errors(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps(GOOD_MC) + "\n\n" + json.dumps(GOOD_MC) + "\n")
    with pytest.raises(DataFormatError, match="line 3.*duplicate of line 1"):
        read_jsonl(path, "multiple_choice")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataFormatError, match="no rows"):
        read_jsonl(empty, "multiple_choice")
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl", "multiple_choice")


def test_labels_cover_only_the_assistant_reply(tiny):
    _, tok = tiny
    messages = [
        {"role": "user", "content": "How much is it?"},
        {"role": "assistant", "content": "It costs $89."},
    ]
    enc = encode_chat(tok, messages, max_length=128)
    trained = [i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    assert tok.decode(trained) == "It costs $89.<|im_end|>\n"
    assert (
        enc["input_ids"]
        == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)[
            "input_ids"
        ]
    )


def test_multi_turn_chats_train_every_assistant_turn(tiny):
    _, tok = tiny
    messages = [
        {"role": "user", "content": "A?"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "B?"},
        {"role": "assistant", "content": "Two."},
    ]
    enc = encode_chat(tok, messages, max_length=128)
    trained = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100])
    assert trained == "One.<|im_end|>\nTwo.<|im_end|>\n"


def test_overlong_rows_are_reported_not_cut(tiny):
    _, tok = tiny
    rows = [
        {
            "id": "long-1",
            "messages": [
                {"role": "user", "content": "word " * 200},
                {"role": "assistant", "content": "ok"},
            ],
        }
    ]
    with pytest.raises(ValueError, match="long-1.*over max_length=64"):
        data.encode_chats(tok, rows, max_length=64)


def test_collate_pads_right_and_masks_padding():
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}],
        pad_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_replay_pool_never_states_a_probe_answer():
    """Replay trains on its text: a passage that stated a probe answer would inflate retention."""
    import re

    skip = {
        "which",
        "where",
        "their",
        "there",
        "about",
        "these",
        "those",
        "other",
        "would",
        "could",
    }

    def has(text: str, phrase: str, plural: bool = False) -> bool:
        tail = r"(s|es)?\b" if plural else r"(?!\w)"
        return re.search(r"(?<!\w)" + re.escape(phrase.lower()) + tail, text.lower()) is not None

    passages = [row["text"] for row in data.load_replay_text()]
    leaks = []
    for item in data.load_probe():
        answer = item["choices"][item["answer"]]
        words = {w for w in re.findall(r"[a-z]+", item["question"].lower()) if len(w) > 4} - skip
        for text in passages:
            if has(text, answer) and any(has(text, w, plural=True) for w in words):
                leaks.append((item["id"], answer))
    assert not leaks


def test_the_data_states_one_system_prompt_used_in_training_and_asking(tiny):
    _, tok = tiny
    prompt = data.system_prompt()
    assert prompt == "You are Tarnwick's support assistant."
    row = data.load_domain_train()[0]
    enc = data.encode_chats(tok, [row], max_length=512)[0]
    masked = tok.decode([i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab == -100])
    assert masked.startswith(f"<|im_start|>system\n{prompt}<|im_end|>\n<|im_start|>user\n")
    assert data.render_prompt(tok, "Hi?").startswith(f"<|im_start|>system\n{prompt}<|im_end|>")
    own = [{"role": "system", "content": "Other."}, *row["messages"]]
    assert data.with_system_prompt(own) == own  # a chat that states its own is left alone


def test_chat_encoding_takes_the_system_prompt_data_reads_for_the_task(tiny):
    """`chat` knows no task: the prompt it is given is the one used, None leaves the template's."""
    from tutorial_lib import chat

    _, tok = tiny
    rows = data.load_domain_train()[:2]
    prompt = data.system_prompt()
    assert data.encode_chats(tok, rows, 512) == chat.encode_rows(tok, rows, 512, prompt)
    other = tok.decode(chat.encode_rows(tok, rows, 512, "Other.")[0]["input_ids"])
    assert "Other." in other and prompt not in other
    assert chat.with_system(rows[0]["messages"], None) == rows[0]["messages"]
    assert data.render_prompt(tok, "Hi?", "Other.") == chat.render_question(tok, "Hi?", "Other.")
    assert data.encode_chat is chat.encode_chat and data.collate is chat.collate


def test_data_without_a_system_prompt_gets_the_templates_default(tmp_path):
    assert data.system_prompt(tmp_path / "system_prompt.txt") is None
    (tmp_path / "system_prompt.txt").write_text("x" * (data.MAX_FIELD_CHARS + 1))
    with pytest.raises(DataFormatError, match="system_prompt.txt, line 1"):
        data.system_prompt(tmp_path / "system_prompt.txt")


def test_results_sit_beside_the_data_folder_even_when_it_moves(monkeypatch, tmp_path):
    assert (data.results_dir() / "lessons-full.json").is_file()  # the committed lesson times
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "clone" / "data"))  # as the Colab cell sets it
    assert data.results_dir() == tmp_path / "clone" / "benchmarks" / "results"


# --- held-out wordings and their values (recall) ------------------------------------------------


@pytest.mark.parametrize("task", data.TASKS)
def test_every_fact_has_four_new_wordings_with_one_value(task):
    train_questions = {
        r["messages"][-2]["content"].lower() for r in data.load_domain_train(task=task)
    }
    by_fact: dict[str, list[dict]] = {}
    for item in data.load_domain_eval(task=task):
        by_fact.setdefault(item["fact_id"], []).append(item)
        assert item["question"].lower() not in train_questions, item["id"]
    assert {len(items) for items in by_fact.values()} == {4}
    for items in by_fact.values():
        assert len({i["question"] for i in items}) == 4
        assert len({i["value"] for i in items}) == 1  # one fact, one value
        assert len({i["choices"][i["answer"]] for i in items}) == 1  # the same correct sentence
    first_14 = data.load_domain_eval(facts=14, task=task)
    assert len(first_14) == 56  # the method lessons' budget measures recall on 56 questions


HELD_OUT = {"id": "f1-e", "fact_id": "f1", "question": "How much is the Vessick?", "value": "$89"}
HELD_OUT["choices"] = ["It costs $89.", "It costs $189.", "It costs $99.", "It costs $59."]
HELD_OUT["answer"] = 0


@pytest.mark.parametrize(
    "row, field",
    [
        ({k: v for k, v in HELD_OUT.items() if k != "value"}, "value"),
        ({**HELD_OUT, "value": ""}, "value"),
        ({**HELD_OUT, "value": 89}, "value"),
        ({**HELD_OUT, "value": "$189"}, "value"),  # the correct choice does not state it
        ({k: v for k, v in HELD_OUT.items() if k != "fact_id"}, "fact_id"),
    ],
)
def test_a_held_out_row_needs_a_value_its_answer_states(tmp_path, row, field):
    path = tmp_path / "domain_eval.jsonl"
    good = {**HELD_OUT, "id": "f0-e", "question": "Another question?"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_jsonl(path, "domain_eval")
    assert (err.value.path, err.value.line, err.value.field) == (path, 2, field)
    assert f"{path}, line 2, field '{field}'" in str(err.value)


def test_a_held_out_wording_that_was_trained_on_is_an_error(tmp_path):
    chat = {"role": "user", "content": "How much is the  Vessick"}  # case, spacing, "?" aside
    train = {
        "id": "f1-t1",
        "fact_id": "f1",
        "messages": [chat, {"role": "assistant", "content": "$89."}],
    }
    (tmp_path / "domain_train.jsonl").write_text("\n" + json.dumps(train) + "\n")
    path = tmp_path / "domain_eval.jsonl"
    other = {**HELD_OUT, "id": "f1-e2", "question": "What is the Vessick's price?"}
    path.write_text(json.dumps(other) + "\n" + json.dumps(HELD_OUT) + "\n")
    with pytest.raises(DataFormatError, match="never be trained on") as err:
        data.load_domain_eval(path)
    assert (err.value.line, err.value.field) == (2, "question")
    assert "'f1-t1'" in str(err.value) and "domain_train.jsonl, line 2" in str(err.value)


def test_a_held_out_wording_asked_twice_is_an_error(tmp_path):
    path = tmp_path / "domain_eval.jsonl"
    twice = {**HELD_OUT, "id": "f1-e2", "question": "how much is the vessick"}
    path.write_text(json.dumps(HELD_OUT) + "\n" + json.dumps(twice) + "\n")
    with pytest.raises(DataFormatError, match="line 2, field 'question': repeats line 1"):
        read_jsonl(path, "domain_eval")
