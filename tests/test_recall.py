"""Recall by generation: greedy replies, batched as one-by-one, scored by the value they state;
the recognition control; and recall in evaluations, summaries and the run report."""

from __future__ import annotations

import math

import pytest
import torch

from tutorial_lib import data, evaluate, recall
from tutorial_lib.evaluate import Evaluation, evaluate_model, run_report
from tutorial_lib.recall import (
    RecallResult,
    evaluate_control,
    evaluate_recall,
    generate_replies,
    recall_change,
    unrelated_questions,
)


def test_replies_are_strings_and_batching_changes_none_of_them(tiny):
    model, tok = tiny
    items = data.load_domain_eval(facts=3)  # 12 questions of different lengths
    batched = generate_replies(model, tok, items, batch_size=5, max_new_tokens=6)
    assert len(batched) == len(items) and all(isinstance(r, str) for r in batched)
    alone = [evaluate.answer(model, tok, item["question"], max_new_tokens=6) for item in items]
    assert batched == alone  # left padding: the same greedy reply as asked one by one
    assert tok.padding_side == "right"  # restored


def test_a_model_without_generate_gets_the_same_greedy_replies(tiny, monkeypatch):
    model, tok = tiny
    items = data.load_domain_eval(facts=2)
    with_generate = generate_replies(model, tok, items, batch_size=3, max_new_tokens=6)

    class ForwardOnly(torch.nn.Module):  # what the from-scratch soft prompt offers
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs):
            return self.inner(**kwargs)

    without = generate_replies(ForwardOnly(model), tok, items, batch_size=3, max_new_tokens=6)
    assert without == with_generate


def test_replies_use_each_items_own_system_prompt(tiny, monkeypatch):
    model, tok = tiny
    seen = []

    def recording(tokenizer, question, system=None):
        seen.append(system)
        return question

    monkeypatch.setattr(recall, "render_prompt", recording)
    items = data.load_domain_eval(facts=1, task="brimvale")[:1] + data.load_domain_eval(facts=1)[:1]
    generate_replies(model, tok, items, max_new_tokens=1)
    assert seen == [data.system_prompt(task="brimvale"), None]  # None: the default task's


class StatesValues:
    """A stand-in model whose greedy reply to item i is `replies[i]`: generate() is the only
    part of the model that recall uses besides the device and eval mode."""

    def __init__(self, tok, replies):
        self.tok, self.replies, self.calls = tok, list(replies), 0
        self.training = False

    def parameters(self):
        yield torch.zeros(1)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def generate(self, input_ids, attention_mask, **kwargs):
        assert kwargs["do_sample"] is False and (attention_mask[:, -1] == 1).all()  # left-padded
        rows = []
        for _ in range(len(input_ids)):
            ids = self.tok(self.replies.pop(0), add_special_tokens=False)["input_ids"]
            rows.append(ids + [self.tok.pad_token_id] * (24 - len(ids)))
        self.calls += 1
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)


def test_recall_counts_the_replies_that_state_the_value(tiny):
    _, tok = tiny
    items = data.load_domain_eval(facts=2)  # f001-e, f002-e, f001-e2..e4, f002-e2..e4
    values = [item["value"] for item in items]
    replies = [f"It is {v}." for v in values]
    replies[0] = "It costs $189."  # a near miss
    replies[2] = "The Vessick daypack costs 89 dollars."  # f001's value, spelled otherwise
    replies[-1] = "I don't know."
    fake = StatesValues(tok, replies)
    result = evaluate_recall(fake, tok, items, batch_size=3)
    assert fake.calls == 3  # 8 items in batches of 3
    assert result.ids == [item["id"] for item in items] and result.values == values
    assert items[2]["value"] == "$89"
    assert result.correct == [False] + [True] * 6 + [False]
    assert result.accuracy == 6 / 8
    assert result.stderr == pytest.approx(math.sqrt(0.75 * 0.25 / 8))
    assert list(result.table().columns) == ["id", "value", "reply", "recalled"]


def test_recall_result_is_checked_and_empty_is_nan():
    with pytest.raises(ValueError, match="one entry per item"):
        RecallResult(ids=["a"], replies=[], values=["1"], correct=[True])
    empty = RecallResult([], [], [], [])
    assert math.isnan(empty.accuracy) and math.isnan(empty.stderr)


def test_the_control_asks_another_facts_question_with_the_same_choices(tiny):
    model, tok = tiny
    items = data.load_domain_eval(facts=3)
    questions = unrelated_questions(items)
    for item, question in zip(items, questions):
        other = next(i for i in items if i["question"] == question)
        assert other["fact_id"] != item["fact_id"]
    assert unrelated_questions(items) == questions  # fixed, not random
    single = data.load_domain_eval(facts=1)
    assert set(unrelated_questions(single)) == {recall.CONTROL_QUESTION}
    control = evaluate_control(model, tok, items, batch_size=4)
    assert control.ids == [item["id"] for item in items]
    assert control.answers == [item["answer"] for item in items]
    assert 0 <= control.accuracy <= 1 and control.stderr >= 0


def _result(correct):
    n = len(correct)
    return RecallResult([f"q{i}" for i in range(n)], ["r"] * n, ["v"] * n, list(correct))


def test_recall_change_pairs_items_and_counts_gains_and_losses():
    before, after = _result([1, 1, 0, 0, 0]), _result([1, 0, 1, 1, 0])
    change = recall_change(before, after)
    assert change["domain_recall_before"] == 0.4 and change["domain_recall_after"] == 0.6
    assert change["domain_recall_change"] == pytest.approx(0.2)
    assert (change["domain_recall_gained"], change["domain_recall_lost"]) == (2, 1)
    assert change["domain_recall_n_items"] == 5
    assert change["domain_recall_change_stderr"] == pytest.approx(
        evaluate.paired_stderr(before.correct, after.correct)
    )
    assert change["domain_recall_after_stderr"] == pytest.approx(after.stderr)
    with pytest.raises(ValueError, match="different items"):
        recall_change(before, _result([1, 0]))
    assert recall_change(None, after) == {}


def test_an_evaluation_measures_recall_unless_asked_not_to(tiny):
    model, tok = tiny
    probe, domain = data.load_probe(limit=4), data.load_domain_eval(facts=1)
    general = data.load_general_text(limit=1)
    full = evaluate_model(model, tok, probe, domain, general, batch_size=4)
    assert full.recall.ids == [item["id"] for item in domain] == full.control.ids
    s = full.summary()
    assert s["domain_recall"] == full.recall.accuracy and s["domain_recall_n_items"] == 4
    assert s["domain_recall_stderr"] == full.recall.stderr
    assert s["domain_control_accuracy"] == full.control.accuracy
    assert "domain_control_accuracy_stderr" in s and "domain_accuracy" in s
    assert full.report().startswith("domain recall")
    lean = evaluate_model(model, tok, probe, domain, general, batch_size=4, recall=False)
    assert lean.recall is None and lean.control is None
    assert not {k for k in lean.summary() if "recall" in k or "control" in k}
    assert lean.domain.accuracy == full.domain.accuracy
    assert Evaluation(lean.probe, lean.domain, 1.0).recall is None  # old call sites still work


def test_a_run_reports_recall_above_mc_accuracy_and_trajectories_skip_it(
    tiny_folder, small_profile, monkeypatch
):
    from tutorial_lib.baseline import Baseline
    from tutorial_lib.experiment import run_experiment
    from tutorial_lib.runspec import RunSpec

    asked = []
    real = recall.evaluate_recall

    def counting(model, tokenizer, items, *args, **kwargs):
        asked.append(len(items))
        return real(model, tokenizer, items, *args, **kwargs)

    monkeypatch.setattr(recall, "evaluate_recall", counting)
    baseline = Baseline(small_profile, tiny_folder).with_trajectory(4, 1)
    result = run_experiment(RunSpec("full", steps=2, eval_at=(1,)), baseline)
    assert asked == [2, 2]  # before and after (quick: 1 fact x 2 wordings); not mid-run
    assert 1 in [p["step"] for p in result.trajectory]  # measured mid-run, without recall
    s = result.summary()
    assert s["domain_recall_n_items"] == 2 and "domain_accuracy_after" in s
    assert s["domain_recall_gained"] + s["domain_recall_lost"] <= 2
    lines = run_report(s, "tarnwick").splitlines()
    recall_line = next(i for i, line in enumerate(lines) if line.startswith("domain recall"))
    mc_line = next(i for i, line in enumerate(lines) if line.startswith("domain accuracy"))
    assert recall_line < mc_line
