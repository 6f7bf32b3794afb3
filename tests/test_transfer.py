"""Lesson 07's "Does this transfer?": the scale study and peft's runs as tables and ranks."""

from __future__ import annotations

import pytest

from tutorial_lib import literature, transfer


def stats(mean, se=0.01):
    return {"mean": mean, "sd": None, "se": se, "n": 1, "how": "seeds"}


def row(method, recall, ce, seeds=(0,)):
    return {
        "method": method,
        "seeds": list(seeds),
        "recall": stats(recall),
        "ce": stats(ce),
        "suite_drop": stats(None, None),
    }


@pytest.fixture
def study() -> dict:
    agreement = {"n": 3, "tau": 1 / 3, "ci95": [-1.0, 1.0], "se_null": 0.5, "same_order": 2}
    agreement |= {"opposite_order": 1, "opposite_beyond_both": 0}
    checked = [{"id": "full_learned_most", "says": "full recalled most", "where": "§2"}]
    return {
        "base": "1×",
        "budgets": {
            "1×": {"rows": [row("full", 0.9, 0.3, (0, 1)), row("lora", 0.7, 0.4), row("dora", 0.6, 0.5)]},
            "4×": {"rows": [row("lora", 0.8, 0.5), row("full", 0.8, 0.6)]},
        },
        "agreement": {"1× vs 4×": {"recall": agreement}},
        "verdicts": {"4×": {"methods": ["full", "lora"], "checked": [checked[0] | {"status": "weakens"}]}},
    }  # fmt: skip


def test_only_methods_every_budget_ran_are_compared(study):
    assert transfer.shared_methods(study) == ["full", "lora"]  # dora ran at 1× only
    table = transfer.budget_table(study)
    assert list(table.index) == ["full", "lora"]
    assert table.loc["full", "recall 1×"] == "0.900 ± 0.010"
    assert table.loc["lora", "ΔCE 4×"] == "0.500 ± 0.010"
    assert table.loc["full", "suite drop 4×"] == "–"  # not measured
    assert table.loc["full", "seeds 1×"] == 2 and table.loc["full", "seeds 4×"] == 1


def test_ranks_put_the_best_first_share_ties_and_rank_peft_among_shared_methods(study):
    run = literature.load()[0]
    got = transfer.ranks(study, run)
    assert got["recall"]["1×"] == {"full": 1, "lora": 2}
    assert got["recall"]["4×"] == {"lora": 1, "full": 1}  # a tie shares the better rank
    assert got["ce"]["1×"] == {"full": 1, "lora": 2}  # less forgetting ranks first
    best = literature.best_runs(run)
    peft = got["ce"][transfer.PUBLISHED]
    assert set(peft) == {"full", "lora"}
    assert (peft["full"] < peft["lora"]) == (
        best["full"].forgetting_ce < best["lora"].forgetting_ce
    )
    assert transfer.PUBLISHED not in got["suite_drop"]  # peft measured no suite


def test_agreement_and_verdict_tables_carry_the_study_s_numbers(study):
    agree = transfer.agreement_table(study)
    line = agree.loc[("1× vs 4×", "recall")]
    assert line["Kendall τ"] == pytest.approx(1 / 3) and line["95 % low"] == -1.0
    assert line["same order"] == 2 and line["opposite"] == 1
    verdicts = transfer.verdict_table(study)
    assert verdicts.loc["full_learned_most", "at 4×"] == "weakens"
    assert transfer.statuses(study, "4×") == {"full_learned_most": "weakens"}
    assert "at 4×, seeds' spread" not in verdicts.columns  # no one-seed budget to widen
    widened = [{"id": "full_learned_most", "says": "-", "where": "-", "status": "holds"}]
    study["verdicts_widened"] = {"4×": {"methods": ["full", "lora"], "checked": widened}}
    table = transfer.verdict_table(study)
    assert table.loc["full_learned_most", "at 4×, seeds' spread"] == "holds"
    assert transfer.statuses(study, "4×", widened=True) == {"full_learned_most": "holds"}


def test_the_rank_plot_draws_a_line_per_method_and_a_column_per_source(study):
    fig = transfer.rank_plot(study, literature.load()[0])
    recall, ce = fig.axes[:2]
    assert len(recall.get_lines()) == 2
    assert [t.get_text() for t in ce.get_xticklabels()] == ["1×", "4×", transfer.PUBLISHED]
    assert recall.yaxis_inverted()  # rank 1 at the top


def test_the_committed_study_is_read_and_a_missing_one_explained(tmp_path):
    study = transfer.committed_study()
    assert study["base"] == "1×" and "4×" in study["budgets"]
    assert set(transfer.statuses(study, "4×").values()) <= {"holds", "weakens", "reverses"}
    with pytest.raises(FileNotFoundError, match="benchmarks/scale_study.py"):
        transfer.committed_study(tmp_path / "none.json")
