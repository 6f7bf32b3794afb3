"""Lesson 08's tables of a run on a learner's own data: what they count is what was measured."""

from __future__ import annotations

import pytest

from tutorial_lib.choices import ChoiceResult
from tutorial_lib.evaluate import Evaluation
from tutorial_lib.own_report import forgetting_table, general_suite, own_table, replies_table
from tutorial_lib.recall import RecallResult


def recall(correct: list[bool], replies=None) -> RecallResult:
    n = len(correct)
    return RecallResult(
        ids=[f"q{i}" for i in range(n)],
        replies=replies or [f"reply {i}" for i in range(n)],
        values=[f"v{i}" for i in range(n)],
        correct=correct,
    )


def choices(right: list[bool], category: str = "probe") -> ChoiceResult:
    n = len(right)
    return ChoiceResult(
        ids=[f"item-{i}" for i in range(n)],
        categories=[category] * n,
        answers=[0] * n,
        predictions=[0 if ok else 1 for ok in right],
        predictions_norm=[0 if ok else 1 for ok in right],
        correct_logprobs=[-1.0 if ok else -2.0 for ok in right],
    )


def test_own_table_counts_recall_gained_and_lost():
    table = own_table(2.5, 1.5, recall([False, False, True]), recall([True, True, False]), 16)
    assert table.loc["held-out loss (nats/token)", "change"] == pytest.approx(-1.0)
    assert table.loc["held-out recall", "before"] == pytest.approx(1 / 3)
    assert table.loc["held-out recall", "after"] == pytest.approx(2 / 3)
    assert table.loc["recall: items gained", "change"] == 2
    assert table.loc["recall: items lost", "change"] == 1


def test_own_table_without_recall_questions_has_the_loss_only():
    table = own_table(2.0, 1.8, None, None, 4)
    assert list(table.index) == ["held-out loss (nats/token)"]


def test_forgetting_table_counts_probe_items_both_ways_and_each_task():
    before = Evaluation(
        choices([True, True, False, False]),
        choices([]),
        3.0,
        suite={"piqa": choices([True, False], "piqa")},
    )
    after = Evaluation(
        choices([True, False, True, True]),
        choices([]),
        3.2,
        suite={"piqa": choices([False, False], "piqa")},
    )
    table = forgetting_table(before, after)
    assert table.loc["probe: items lost", "change"] == 1
    assert table.loc["probe: items gained", "change"] == 2
    assert table.loc["general-text CE (nats/token)", "change"] == pytest.approx(0.2)
    assert table.loc["suite: piqa", "change"] == pytest.approx(-0.5)
    assert table.loc["probe accuracy", "± (change)"] > 0


def test_replies_table_refuses_other_questions():
    items = [{"id": "q0", "question": "How much?"}, {"id": "q1", "question": "How heavy?"}]
    table = replies_table(items, recall([False, True]), recall([True, True]))
    assert list(table["recalled before → after"]) == ["no → yes", "yes → yes"]
    with pytest.raises(ValueError, match="same questions"):
        replies_table(items[:1], recall([False, True]), recall([True, True]))


def test_general_suite_has_no_domain_questions(small_profile):
    suite = general_suite(small_profile)
    assert suite.domain == [] and suite.probe and suite.general
