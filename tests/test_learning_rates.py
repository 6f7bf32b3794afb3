"""The registry's default learning rates are the ones the lessons' sweeps measured best."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from tutorial_lib.methods import get_method

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "learning-rates.json"
SWEEP_RECORD = ROOT / "benchmarks" / "results" / "rate-sweep.json"  # rates.RATE_RULE's choices


def _benchmark(name: str):
    """Import a script of benchmarks/ for the module's tests, then forget it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def rates():
    yield from _benchmark("learning_rates")


def _run(method, lr, domain, retention, config=None):
    return {
        "method": method,
        "lr": lr,
        "steps": 28,
        "seed": 0,
        "domain_n_items": 14,
        "probe_n_items": 120,
        "domain_accuracy_before": 0.5,
        "domain_accuracy_after": domain,
        "retention": retention,
        "general_ce_after": 3.0,
        "sec_per_step": 2.0,
        "spec": {"method_config": config},
    }


def test_best_rate_is_most_learning_then_most_kept_and_only_default_configs_count(rates):
    runs = [
        _run("top-layers", 3e-4, 0.6, 0.95, {"k": 2}),
        _run("top-layers", 1e-3, 0.8, 0.90, {"k": 2}),
        _run("top-layers", 1e-4, 1.0, 0.99, {"k": 8}),  # another config: not the default's rate
        _run("ia3", 3e-2, 0.7, 0.95),
        _run("ia3", 1e-1, 0.7, 0.97),
    ]
    record = rates.record(runs)
    assert record["top-layers"]["best_lr"] == 1e-3
    assert [r["lr"] for r in record["top-layers"]["rates"]] == [3e-4, 1e-3]
    assert record["ia3"]["best_lr"] == 1e-1  # a tie in learning goes to the one that kept more
    assert record["ia3"]["budget"] == {
        "steps": 28,
        "seed": 0,
        "domain_n_items": 14,
        "probe_n_items": 120,
    }


def test_a_row_that_is_not_a_sweep_result_is_named_by_file_and_line(rates, tmp_path):
    sweep = tmp_path / "sweep.jsonl"
    sweep.write_text(json.dumps({"config": {}, "result": _run("ia3", 1e-2, 0.5, 1.0)}) + "\n{}\n")
    with pytest.raises(ValueError, match=r"sweep.jsonl, line 2"):
        rates.read_runs([sweep])


def test_registered_defaults_are_the_fair_rate_sweeps_choices():
    """Every method the fair-rate sweep has finished trains by default at the rate its rule
    chose, and a method that shares another's rate by construction has that rate."""
    saved = json.loads(SWEEP_RECORD.read_text())
    assert len(saved["methods"]) >= 7  # the headline methods
    for method, row in saved["methods"].items():
        assert get_method(method).default_lr == row["chosen_lr"], method
    for method, sharer in saved["shared"].items():
        if sharer in saved["methods"]:
            assert get_method(method).default_lr == get_method(sharer).default_lr, method


@pytest.fixture(scope="module")
def sweep():
    yield from _benchmark("rate_sweep")


def _swept(method, lr, recall, se=0.05):
    return _run(method, lr, 0.7, 0.9) | {
        "domain_recall_after": recall,
        "domain_recall_after_stderr": se,
        "domain_recall_before": 0.0,
    }


def test_the_sweep_records_the_rules_choice_for_methods_whose_three_rates_are_done(sweep):
    low, mid, high = sweep.RATES["lora"]
    runs = [_swept("lora", low, 0.50), _swept("lora", mid, 0.58), _swept("lora", high, 0.60)]
    runs += [_swept("full", sweep.RATES["full"][0], 0.9)]  # one rate of three: not recorded yet
    runs += [{"method": "ia3", "lr": 0.1, "error": {"type": "RuntimeError", "message": "x"}}]
    record = sweep.record(runs)
    assert list(record) == ["lora"]
    lora = record["lora"]
    # the best is 0.60 at the highest rate; 0.58 is within one standard error (0.05): the lower
    assert lora["chosen_lr"] == mid and lora["best_lr"] == high
    assert not lora["at_the_sweeps_edge"]
    assert [r["lr"] for r in lora["rates"]] == [low, mid, high]
    assert set(lora["rates"][0]) == set(sweep.KEPT)
    assert lora["budget"] == {"steps": 28, "seed": 0, "domain_n_items": 14, "probe_n_items": 120}


def test_every_swept_rate_set_has_three_rates_and_shared_methods_name_a_swept_one(sweep):
    assert all(len(set(rates)) in (3, 4) for rates in sweep.RATES.values())
    assert set(sweep.SHARED.values()) <= set(sweep.RATES)
    for method in [*sweep.RATES, *sweep.SHARED]:
        get_method(method)  # every name is registered
    configs = sweep.configs(["ia3"], steps=28)
    assert [c["lr"] for c in configs] == list(sweep.RATES["ia3"])
    assert all(c["eval_at"] == [] and c["seed"] == 0 for c in configs)


def _record(tmp_path, methods: dict) -> str:
    """A fair-rate record with `methods` under benchmarks/results of a temporary data root."""
    (tmp_path / "rate-sweep.json").write_text(json.dumps({"methods": methods}))
    return "rate-sweep.json"


def _entry(lrs, chosen):
    rates = [
        {"lr": lr, "domain_recall_after": 0.1 * i, "probe_lost": i, "probe_gained": 1}
        for i, lr in enumerate(lrs)
    ]
    return {"chosen_lr": chosen, "best_lr": lrs[-1], "rates": rates}


def test_the_sweep_table_shows_every_rate_and_marks_the_rule_s_choice(tmp_path, monkeypatch):
    from tutorial_lib import data, rates

    monkeypatch.setattr(data, "results_dir", lambda: tmp_path)
    name = _record(tmp_path, {"ln-tuning": _entry([3e-3, 1e-2, 3e-2], 1e-2)})
    table = rates.sweep_table(["ln-tuning", "bias-added"], name)
    ln = table.loc["ln-tuning"]
    assert list(ln.index) == [3e-3, 1e-2, 3e-2]
    assert list(ln["chosen"] != "") == [False, True, False]  # one mark, at the chosen rate
    assert list(ln["probe lost"]) == [0, 1, 2]
    assert "not yet" in table.loc["bias-added"]["chosen"].iloc[0]  # absent: said, not dropped


def test_a_lesson_runs_the_chosen_rate_and_the_one_below_it(tmp_path, monkeypatch):
    from tutorial_lib import data, rates

    monkeypatch.setattr(data, "results_dir", lambda: tmp_path)
    name = _record(
        tmp_path,
        {"a": _entry([1e-3, 3e-3, 1e-2], 3e-3), "b": _entry([1e-3, 3e-3, 1e-2], 1e-3)},
    )
    assert rates.chosen_and_neighbour("a", name) == [1e-3, 3e-3]
    assert rates.chosen_and_neighbour("b", name) == [1e-3, 3e-3]  # lowest chosen: the one above
    assert rates.chosen_and_neighbour("c", name) is None


def test_the_committed_record_names_the_lesson_04_rates():
    from tutorial_lib import rates

    for method in ("top-layers", "ln-tuning"):
        entry = rates.swept(method)
        assert entry is not None and entry["chosen_lr"] in rates.chosen_and_neighbour(method)
