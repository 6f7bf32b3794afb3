"""A second invented company beside Tarnwick: its data is valid and separate, and every chat,
question and generated answer of a task goes out under that company's own system prompt."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pytest

from tutorial_lib import data, evaluate
from tutorial_lib.baseline import Baseline, Suite
from tutorial_lib.evaluate import evaluate_choices, question_prompt
from tutorial_lib.experiment import run_experiment, training_examples
from tutorial_lib.runspec import RunSpec
from tutorial_lib.scoring import score_continuations

PROMPTS = {
    "tarnwick": "You are Tarnwick's support assistant.",
    "brimvale": "You are Brimvale's support assistant.",
}


def _files(task: str) -> tuple[list[dict], list[dict]]:
    """A task's training and held-out rows, read and validated straight from its files."""
    folder = data.task_dir(task)
    return (
        data.read_jsonl(folder / "domain_train.jsonl", "chat"),
        data.read_jsonl(folder / "domain_eval.jsonl", "multiple_choice"),
    )


def _question(row: dict) -> str:
    return row["messages"][-2]["content"]  # the user's turn, after any system message


def _texts(task: str) -> list[str]:
    """Every string a task's files hold: system prompt, questions, answers, choices."""
    train, held_out = _files(task)
    texts = [data.system_prompt(task=task)]
    texts += [m["content"] for r in train for m in r["messages"]]
    return texts + [t for item in held_out for t in (item["question"], *item["choices"])]


def _names(task: str) -> set[str]:
    """Capitalised words after the first of each answer or choice: the company's, its
    products', places' and people's names (each answer is one sentence)."""
    train, held_out = _files(task)
    sentences = [r["messages"][-1]["content"] for r in train]
    sentences += [c for item in held_out for c in item["choices"]]
    return {w for s in sentences for w in re.findall(r"[A-Za-z]+", s)[1:] if w[0].isupper()}


def test_brimvale_files_validate_and_follow_tarnwicks_recipe():
    train, held_out = _files("brimvale")
    by_fact: dict[str, list[dict]] = {}
    for row in train:
        by_fact.setdefault(row["fact_id"], []).append(row)
    assert 36 <= len(by_fact) <= 44
    assert sorted(item["fact_id"] for item in held_out) == sorted(list(by_fact) * 4)  # four each
    train_questions = {_question(r).lower() for r in train}
    for item in held_out:
        rows = by_fact[item["fact_id"]]
        assert [r["id"] for r in rows] == [f"{item['fact_id']}-t{i}" for i in range(1, 5)]
        assert len({_question(r) for r in rows}) == 4, item["id"]
        answers = Counter(r["messages"][-1]["content"] for r in rows)
        (canonical, three), (_, one) = answers.most_common()  # canonical x3, variant x1
        assert (three, one) == (3, 1), item["id"]
        assert item["choices"][item["answer"]] == canonical, item["id"]
        assert not set(item["choices"]) - {canonical} & set(answers), item["id"]
        assert item["question"].lower() not in train_questions, item["id"]
    slots = Counter(item["answer"] for item in held_out)
    assert len(slots) == 4 and max(slots.values()) - min(slots.values()) <= 1


def test_brimvale_and_tarnwick_share_no_name_and_no_question():
    tarnwick, brimvale = _names("tarnwick"), _names("brimvale")
    assert {"Tarnwick", "Vessick", "Bozeman"} <= tarnwick  # the extraction finds names
    assert {"Brimvale", "Kitchenworks", "Pimbrook", "Yarrowdene"} <= brimvale
    assert not tarnwick & brimvale
    for names, other in ((tarnwick, "brimvale"), (brimvale, "tarnwick")):
        words = {w for text in _texts(other) for w in re.findall(r"[A-Za-z]+", text)}
        assert not names & words, other  # not even in the other company's questions

    def questions(task: str) -> set[str]:
        train, held_out = _files(task)
        return {
            q.lower() for q in [_question(r) for r in train] + [i["question"] for i in held_out]
        }

    assert not questions("tarnwick") & questions("brimvale")


def _system_of(tok, encoded: dict) -> str:
    """The masked (not trained) part of an encoded chat: system prompt and question."""
    return tok.decode([i for i, lab in zip(encoded["input_ids"], encoded["labels"]) if lab == -100])


def test_each_companys_chats_and_questions_go_out_under_its_own_prompt(tiny):
    _, tok = tiny
    chats = [data.load_domain_train(facts=1, task=task)[0] for task in PROMPTS]
    encoded = data.encode_chats(tok, chats, max_length=256)  # one mixed batch
    for task, enc in zip(PROMPTS, encoded):
        head = f"<|im_start|>system\n{PROMPTS[task]}<|im_end|>\n<|im_start|>user\n"
        assert _system_of(tok, enc).startswith(head), task
        item = data.load_domain_eval(facts=1, task=task)[0]
        context, _ = question_prompt(tok, item["question"], "chat", item.get("system"))
        assert context.startswith(f"<|im_start|>system\n{PROMPTS[task]}<|im_end|>"), task
        assert item["question"] in context
    # the default task's rows are as they always were: the prompt is added when encoding
    assert data.load_domain_train(facts=1)[0]["messages"][0]["role"] == "user"
    assert "system" not in data.load_domain_eval(facts=1)[0]


def test_a_brimvale_question_is_scored_after_brimvales_prompt(tiny):
    model, tok = tiny
    item = data.load_domain_eval(facts=1, task="brimvale")[0]
    got = evaluate_choices(model, tok, [item]).correct_logprobs[0]
    correct = item["choices"][item["answer"]]
    own, default = score_continuations(
        model,
        tok,
        [
            (data.render_prompt(tok, item["question"], PROMPTS["brimvale"]), correct),
            (data.render_prompt(tok, item["question"]), correct),
        ],
    )
    assert got == pytest.approx(own[0], abs=1e-4)
    assert got != pytest.approx(default[0], abs=1e-4)


def test_generation_for_a_task_uses_its_prompt(tiny, monkeypatch):
    model, tok = tiny
    seen = []

    def recording(tokenizer, question, system=None):
        seen.append(data.render_prompt(tokenizer, question, system))
        return seen[-1]

    monkeypatch.setattr(evaluate, "render_prompt", recording)
    evaluate.side_by_side({"a": model}, tok, ["Hi?"], max_new_tokens=1, system=PROMPTS["brimvale"])
    evaluate.answer(model, tok, "Hi?", max_new_tokens=1)
    assert PROMPTS["brimvale"] in seen[0] and PROMPTS["tarnwick"] in seen[1]


def test_a_profiles_suite_and_training_data_come_from_the_task(tiny, profile_with):
    _, tok = tiny
    profile = profile_with(domain_facts=2)
    suite = Suite.from_profile(profile, task="brimvale")
    assert list(dict.fromkeys(q["fact_id"] for q in suite.domain)) == ["b001", "b002"]
    assert {q["system"] for q in suite.domain} == {PROMPTS["brimvale"]}
    examples = training_examples(tok, profile, 0.0, seed=0, task="brimvale")
    assert len(examples) == 8
    assert all(PROMPTS["brimvale"] in _system_of(tok, ex) for ex in examples)


def test_run_experiment_trains_and_asks_the_specs_task(tiny_folder, small_profile):
    result = run_experiment(
        RunSpec("full", steps=1, task="brimvale"),
        Baseline(small_profile, tiny_folder, task="brimvale"),
    )
    assert (
        result.after.domain.ids == ["b001-e", "b001-e2"]  # quick asks 2 of the 4 wordings
        and result.summary()["spec"]["task"] == "brimvale"
    )


def test_task_folders_and_unknown_tasks():
    assert data.task_dir("tarnwick") == data.data_dir()
    assert data.task_dir("brimvale") == data.data_dir() / "brimvale"
    allowed = "unknown task 'acme'; allowed: 'tarnwick', 'brimvale'"
    for call in (
        lambda: data.task_dir("acme"),
        lambda: data.load_domain_train(task="acme"),
        lambda: data.load_domain_eval(task="acme"),
        lambda: data.system_prompt(task="acme"),
        lambda: RunSpec("full", task="acme"),
    ):
        with pytest.raises(ValueError, match=allowed):
            call()


def test_a_task_without_its_own_prompt_is_an_error_not_tarnwicks(tmp_path, monkeypatch):
    """Falling back to the default prompt would train Brimvale's facts as Tarnwick's assistant."""
    shutil.copytree(data.task_dir("brimvale"), tmp_path / "brimvale")
    (tmp_path / "brimvale" / "system_prompt.txt").unlink()
    (tmp_path / "system_prompt.txt").write_text(PROMPTS["tarnwick"] + "\n")  # not to be borrowed
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    for load in (data.load_domain_train, data.load_domain_eval):
        with pytest.raises(FileNotFoundError, match="'brimvale' needs its own system prompt"):
            load(task="brimvale")


def test_a_mixture_of_tasks_trains_and_asks_both_companies_each_under_its_prompt(tiny):
    _, tok = tiny
    rows = data.load_domain_train(facts=1, task="tarnwick+brimvale")
    assert [r["fact_id"] for r in rows] == ["f001"] * 4 + ["b001"] * 4
    encoded = [tok.decode(ex["input_ids"]) for ex in data.encode_chats(tok, rows, 256)]
    assert all(PROMPTS["tarnwick"] in text for text in encoded[:4])
    assert all(PROMPTS["brimvale"] in text for text in encoded[4:])
    questions = data.load_domain_eval(facts=2, task="tarnwick+brimvale")
    first = [q["id"] for q in questions if q["id"].endswith("-e")]  # each fact's first wording
    assert first == ["f001-e", "f002-e", "b001-e", "b002-e"] and len(questions) == 16
    assert RunSpec("full", task="tarnwick+brimvale").task == "tarnwick+brimvale"
    for bad in ("tarnwick+acme", "tarnwick+tarnwick"):
        with pytest.raises(ValueError, match="joined by '\\+'"):
            RunSpec("full", task=bad)
    with pytest.raises(ValueError, match="only a single task has a folder"):
        data.task_dir("tarnwick+brimvale")


def test_a_sweep_run_can_keep_its_trained_weights(tiny_folder, small_profile, tmp_path):
    from tutorial_lib.experiment import summarised_run

    summary = summarised_run(
        Baseline(small_profile, tiny_folder),
        label="adapter run",
        method="adapter",
        steps=1,
        save_as=tmp_path / "adapter.safetensors",
    )
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter.safetensors"))
    assert summary["label"] == "adapter run" and saved
    assert sum(t.numel() for t in saved.values()) == summary["trainable_params"]


def test_train_only_trains_the_weights_run_experiment_trains_without_measuring(
    tiny_folder, small_profile, monkeypatch
):
    import torch

    from tutorial_lib import experiment

    spec = RunSpec("ia3", steps=2, lr=1e-2, seed=3, task="brimvale")
    measured = run_experiment(spec, Baseline(small_profile, tiny_folder, task="brimvale"))

    def no_evaluation(*args, **kwargs):
        raise AssertionError("train_only evaluated the model")

    monkeypatch.setattr(experiment, "evaluate_suite", no_evaluation)
    model, result = experiment.train_only(spec, small_profile, tiny_folder)
    assert result.steps_done == 2 and result.loss_history == measured.train.loss_history
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    reference = dict(measured.model.named_parameters())
    assert trained and all(torch.equal(p, reference[n]) for n, p in trained.items())
