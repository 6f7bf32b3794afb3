"""The comparison read on the new measures: means and spreads over seeds, suite per task, floor."""

from __future__ import annotations

import pytest

from tutorial_lib import method_table as mt


def _run(method="lora", seed=0, recall=0.5, ce=0.2, kl=0.3, lost=5, gained=3, suite=True):
    run = {
        "method": method,
        "seed": seed,
        "lr": 3e-3,
        "domain_recall_after": recall,
        "domain_accuracy_after": 0.8,
        "domain_control_accuracy_after": 0.6,
        "general_ce_change": ce,
        "general_ce_change_stderr": 0.01,
        "kl_to_base": kl,
        "kl_to_base_stderr": 0.01,
        "forgetting": (lost - gained) / 120,
        "forgetting_stderr": 0.02,
        "probe_lost": lost,
        "probe_gained": gained,
    }
    if suite:
        run |= {
            "suite_accuracy_before": {"piqa": 0.6, "hellaswag": 0.4},
            "suite_accuracy_after": {"piqa": 0.55, "hellaswag": 0.42},
            "suite_lost": {"piqa": 8, "hellaswag": 2},
            "suite_gained": {"piqa": 3, "hellaswag": 4},
            "suite_sign_test_p": {"piqa": 0.2, "hellaswag": 0.7},
            "suite_n_items": {"piqa": 100, "hellaswag": 100},
            "suite_composite_before": 0.3,
            "suite_composite_after": 0.29,
        }
    return run


def test_rows_give_mean_and_sd_over_seeds_and_skip_failed_runs():
    records = [
        _run(seed=0, recall=0.5, ce=0.2),
        _run(seed=1, recall=0.7, ce=0.4),
        {"method": "lora", "seed": 2, "lr": 3e-3, "error": {"type": "E", "message": "x"}},
        _run("full", recall=0.9, suite=False),
    ]
    lora, full = mt.method_rows(records)
    assert (lora["method"], lora["seeds"], full["seeds"]) == ("lora", 2, 1)
    assert lora["domain_recall_after"] == pytest.approx(0.6)
    assert lora["domain_recall_after_sd"] == pytest.approx(0.1414, abs=1e-4)
    assert lora["general_ce_change"] == pytest.approx(0.3)
    assert full["domain_recall_after_sd"] is None  # one seed: no spread
    assert lora["suite"]["piqa"]["change"] == pytest.approx(-0.05)
    assert (lora["suite"]["piqa"]["lost"], lora["suite"]["piqa"]["gained"]) == (8, 3)
    assert lora["suite"]["composite"]["change"] == pytest.approx(-0.01)
    assert full["suite"] == {} and full["floor"] is None


def test_a_method_is_judged_against_its_own_floor():
    floor = _run(ce=0.05, kl=0.05, lost=2, gained=2) | {"train_on": "general"}
    (row,) = mt.method_rows([_run(ce=0.2, kl=0.02)], [floor])
    assert row["floor"]["general_ce_change"] == 0.05
    # 0.2 - 0.05 = 0.15 beyond 2 se (0.028); 0.02 - 0.05 below it
    assert row["verdicts"]["general_ce_change"] == "beyond"
    assert row["verdicts"]["kl_to_base"] == "below"
    assert row["floor"]["suite"]["piqa"]["lost"] == 8


def test_markdown_tables_show_every_method_and_task():
    rows = mt.method_rows([_run(seed=0), _run(seed=1, recall=0.7), _run("full", suite=False)])
    table = mt.markdown(rows)
    assert table.startswith("| method | lr | seeds | recall |")
    assert "| lora | 0.003 | 2 | 0.600 ± 0.141 |" in table
    assert "| full | 0.003 | 1 | 0.500 |" in table
    suite = mt.suite_markdown(rows)
    assert "| method | hellaswag | piqa |" in suite
    assert "-0.050 ± 0.000 (−8.0 / +3.0)" in suite
    assert mt.suite_markdown(mt.method_rows([_run(suite=False)])) == ""


def test_costs_scale_each_column_and_leave_out_methods_without_a_finished_run():
    def stat(mean):
        return {"mean": mean, "std": None}

    summary = [
        {
            "method": "lora",
            "family": "reparameterization",
            "seeds": 3,
            "trainable_percent": stat(1.8),
            "training_memory_bytes": stat(3 * 2**30),
            "checkpoint_bytes": stat(9.5 * 2**20),
        },
        {"method": "bitfit", "family": "selective", "seeds": 0},
    ]
    table = mt.costs(summary)
    assert list(table.index) == ["lora"]
    assert table.loc["lora"].tolist() == ["reparameterization", 1.8, 3.0, 9.5]


def test_floor_markdown_sets_seed_0_beside_its_floor_with_the_verdicts():
    floor = _run(ce=0.05, kl=0.05, lost=2, gained=4) | {"train_on": "general"}
    rows = mt.method_rows([_run(seed=1, ce=0.9), _run(ce=0.2, kl=0.02), _run("full")], [floor])
    table = mt.floor_markdown(rows)
    assert "| lora | 0.200 | 0.050 | beyond | 0.020 | 0.050 | below | −5 / +3 | −2 / +4 |" in table
    assert "| full |" not in table  # no floor, no row
