"""The results lesson 07 reads, committed under benchmarks/results: complete, on the lessons'
budget, and still what today's code computes from them."""

from __future__ import annotations

import json
from pathlib import Path

from tutorial_lib import compare as cmp
from tutorial_lib import results
from tutorial_lib.config import LESSON_BUDGETS, get_profile, lesson_profile
from tutorial_lib.methods import REGISTRY


def test_the_committed_comparison_is_every_method_on_the_lessons_budget():
    saved = results.committed()
    assert {r["method"] for r in saved["records"]} == set(REGISTRY)
    done = [r for r in saved["records"] if "error" not in r]
    assert len({r["method"] for r in done}) >= 12
    assert {r["steps"] for r in done} == {28} and saved["ran"]["profile"]["domain_facts"] == 14
    assert {r["domain_n_items"] for r in done} == {r["domain_recall_n_items"] for r in done} == {56}
    assert saved["ran"]["command"].startswith("tutorial-lib compare")
    profile = get_profile("full").with_overrides(
        domain_facts=14, probe_items=120, general_items=16, train_steps=28
    )
    assert results.same_budget(saved, profile, 28) and not results.same_budget(saved, profile, 27)
    again = cmp.of_json(saved)
    assert again.target == saved["target"]
    for now, then in zip(again.summary(), saved["summary"], strict=True):  # today's adds keys
        assert {k: now[k] for k in then} == then


def test_the_committed_comparison_holds_a_floor_and_three_seeds_where_lesson_07_says():
    """Each method's noise floor ran at its runs' rate and steps on general text, and the seven
    headline methods ran three seeds, each measured on the suite and with items lost and gained."""
    saved = results.committed()
    done = [r for r in saved["records"] if "error" not in r]
    floors = {f["method"]: f for f in saved["floors"] if "error" not in f}
    assert set(floors) == {r["method"] for r in done}
    for run in done:
        floor = floors[run["method"]]
        assert (floor["lr"], floor["steps"], floor["train_on"]) == (run["lr"], 28, "general")
        assert run["train_on"] == "domain" and run["probe_n_items"] == 120
        assert "general_ce_change_stderr" in run and "kl_to_base" in run and "suite_lost" in run
        assert set(run["suite_n_items"].values()) == {100}
    headline = ("full", "lora", "qlora", "adapter", "ia3", "ln-tuning", "top-layers")
    for method in headline:
        assert sorted(r["seed"] for r in done if r["method"] == method) == [0, 1, 2], method


def test_lesson_07s_budget_is_the_one_its_committed_comparison_ran_at():
    """Lesson 07 repeats the committed runs exactly only on their budget (config.py names it)."""
    saved = results.committed()
    lesson = lesson_profile("07", get_profile("full"))
    assert results.same_budget(saved, lesson, lesson.train_steps)
    for size in results.BUDGET:
        assert saved["ran"]["profile"][size] == getattr(lesson, size), size
    # the method lessons share it, so their full runs are the comparison's runs
    assert all(LESSON_BUDGETS[n] is LESSON_BUDGETS["03"] for n in ("04", "05"))
    method_lesson = lesson_profile("03", get_profile("full"))
    assert lesson == method_lesson.with_overrides(suite_items=100)  # 07 adds the suite


RECORDED = (
    Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "memory-estimate.json"
)


def test_every_method_is_within_the_stated_tolerance_of_its_measured_peak():
    """`benchmarks/memory_estimate.py`'s peaks on the real model, against today's estimator."""
    from tutorial_lib.memory import VALIDATED_WITHIN, validation_table
    from tutorial_lib.methods import REGISTRY

    runs = json.loads(RECORDED.read_text())["runs"]
    measured = {(r["method"], r["batch"]) for r in runs if "error" not in r}
    refused = {r["method"] for r in runs if "error" in r}
    assert refused <= {"bitfit"}  # no biases in a Llama: it refuses, naming the alternatives
    assert {m for m, _ in measured} | refused == set(REGISTRY)
    assert all(
        len({b for m, b in measured if m == method}) == 2
        for method in REGISTRY
        if method not in refused
    )
    table = validation_table(runs)
    assert table["error (%)"].abs().max() < VALIDATED_WITHIN, table
