"""A re-run beside its committed record: exact, within errors, or neither."""

from __future__ import annotations

import pytest

from tutorial_lib.repeat import against_committed


def run(method, recall, ce, seed=0, **extra):
    return {
        "method": method,
        "seed": seed,
        "domain_recall_after": recall,
        "domain_recall_after_stderr": 0.06,
        "domain_accuracy_after": 0.75,
        "domain_n_items": 48,
        "general_ce_change": ce,
        "general_ce_change_stderr": 0.02,
        "kl_to_base": ce + 0.1,
        "kl_to_base_stderr": 0.02,
    } | extra


def test_exact_within_errors_and_beyond_are_told_apart():
    committed = [
        run("full", 0.9, 0.3),
        run("qlora", 0.68, 0.643),
        {"method": "x", "seed": 0, "error": {}},
    ]
    live = [run("full", 0.9, 0.30000001), run("qlora", 0.66, 0.637)]
    table = against_committed(live, committed)
    assert table.loc[("full", "general_ce_change"), "exact"]
    assert table["within errors"].all()
    qlora = table.loc[("qlora", "domain_recall_after")]
    assert (
        not qlora["exact"] and qlora["difference"] == pytest.approx(-0.02) and qlora["se"] == 0.06
    )
    assert table.loc[("full", "domain_accuracy_after"), "se"] == pytest.approx(
        (0.75 * 0.25 / 48) ** 0.5
    )
    far = against_committed([run("full", 0.5, 0.3)], committed)
    assert not far.loc[("full", "domain_recall_after"), "within errors"]  # 0.4 > 2 x 0.06
    with pytest.raises(KeyError):
        against_committed([run("lora", 0.5, 0.3)], committed)  # nothing committed to repeat
