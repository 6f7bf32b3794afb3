"""Rank correlations: equal to the textbook values (checked against hand counts)."""

from __future__ import annotations

import math

import pytest

from tutorial_lib import rank_agreement as ra


def test_ranks_share_ties():
    assert ra.ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]


def test_perfect_and_reversed_orders():
    x = [1.0, 2.0, 3.0, 4.0]
    assert ra.spearman(x, [10.0, 20.0, 30.0, 40.0]) == pytest.approx(1.0)
    assert ra.kendall_tau(x, [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_kendall_counts_pairs_and_corrects_ties():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 3.0, 2.0, 5.0, 4.0]
    counts = ra.pair_counts(x, y)
    assert counts == {"concordant": 8, "discordant": 2, "tied": 0}
    assert ra.kendall_tau(x, y) == pytest.approx(0.6)  # (8 - 2) / 10
    assert ra.spearman(x, y) == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    # one tie in x: tau-b = (C - D) / sqrt((n0 - tx)(n0 - ty)) = (7 - 2) / sqrt(9 * 10)
    tied = [1.0, 1.0, 3.0, 4.0, 5.0]
    assert ra.kendall_tau(tied, y) == pytest.approx(5 / math.sqrt(90))
    assert math.isnan(ra.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    x = [float(i) for i in range(12)]
    y = [v + (3 if i % 3 == 0 else 0) for i, v in enumerate(x)]
    lo, hi = ra.bootstrap_interval(x, y, draws=400)
    assert lo <= ra.spearman(x, y) <= hi <= 1.0
    assert (lo, hi) == ra.bootstrap_interval(x, y, draws=400)


def test_probe_vs_suite_reads_runs_and_refuses_too_few():
    def run(i, probe, drop):
        return {
            "method": f"m{i}",
            "seed": 0,
            "forgetting": probe,
            "general_ce_change": probe * 2,
            "suite_accuracy_before": {"piqa": 0.6, "arc_easy": 0.5},
            "suite_accuracy_after": {"piqa": 0.6 - drop, "arc_easy": 0.5 - drop},
        }

    records = [run(i, p, d) for i, (p, d) in enumerate([(0.1, 0.05), (0.2, 0.02), (0.3, 0.1)])]
    records.append({"method": "bad", "error": {"type": "E", "message": "x"}})
    out = ra.probe_vs_suite(records)
    assert out["probe"]["n"] == 3 and out["probe"]["spearman"] == pytest.approx(0.5)
    assert out["ce"]["spearman"] == pytest.approx(0.5)
    assert [p["suite"] for p in out["points"]] == pytest.approx([0.05, 0.02, 0.1])
    assert ra.suite_drop(records[0], ("piqa",)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="at least 3 runs"):
        ra.probe_vs_suite(records[:2])
    with pytest.raises(ValueError, match="same points"):
        ra.spearman([1.0, 2.0], [1.0])


def test_tasks_above_chance_keep_only_tasks_with_room_to_fall():
    run = {  # the base model's suite at 100 items a task, as the comparison records it
        "suite_accuracy_before": {
            "arc_easy": 0.51,
            "arc_challenge": 0.20,
            "hellaswag": 0.35,
            "piqa": 0.62,
            "winogrande": 0.43,
        },
        "suite_chance": {
            "arc_easy": 0.25,
            "arc_challenge": 0.25,
            "hellaswag": 0.25,
            "piqa": 0.5,
            "winogrande": 0.5,
        },
        "suite_n_items": dict.fromkeys(
            ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande"], 100
        ),
    }
    # hellaswag: 0.10 above chance, 2 se of guessing = 0.087; piqa: 0.12 against 0.10
    assert ra.tasks_above_chance(run) == ("arc_easy", "hellaswag", "piqa")
    assert ra.tasks_above_chance(run, z=2.5) == ("arc_easy",)
