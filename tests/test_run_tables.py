import pytest

from tutorial_lib.run_tables import COLUMNS, measures_table


def _run(label: str, **over) -> dict:
    run = {
        "label": label,
        "method": "adapter",
        "general_ce_change": 0.41234,
        "general_ce_change_stderr": 0.05,
        "kl_to_base": 0.3,
        "kl_to_base_stderr": 0.02,
        "probe_lost": 9,
        "probe_gained": 3,
        "probe_sign_test_p": 0.146,
        "retention": 0.9,
        "domain_recall_after": 0.5,
        "domain_recall_change_stderr": 0.1,
        "domain_accuracy_after": 0.857,
    }
    return run | over


def test_columns_lead_with_continuous_forgetting_then_flips_then_learning():
    table = measures_table([_run("a"), _run("b", kl_to_base=None, probe_lost=1)])
    assert list(table.columns) == list(COLUMNS)
    assert list(table.columns)[:2] == ["ΔCE (nats/token)", "ΔCE ±"]
    assert table.loc["a", "ΔCE (nats/token)"] == 0.412  # rounded to 3 digits
    assert table.loc["a", "recall ±"] == 0.1  # the paired se of the recall change
    assert table.loc["b", "probe lost"] == 1 and table["probe lost"].dtype == "Int64"
    assert table["KL to base"].isna().tolist() == [False, True]  # not measured: empty


def test_failed_runs_are_left_out_and_none_left_is_an_error():
    table = measures_table([_run("a"), {"label": "x", "method": "ia3", "error": "boom"}])
    assert list(table.index) == ["a"]
    with pytest.raises(ValueError, match="no finished run"):
        measures_table([{"label": "x", "method": "ia3", "error": "boom"}])


def test_forgetting_then_learning_tables_in_reading_order():
    from tutorial_lib.run_tables import forgetting_table, learning_table

    extra = {"forgetting": -0.0167, "forgetting_stderr": 0.0229, "probe_logprob_shift": -0.1}
    extra |= {"probe_logprob_shift_stderr": 0.01, "domain_control_accuracy_after": 0.6}
    table = forgetting_table([_run("a", **extra)])
    assert list(table.columns)[:6] == [
        "ΔCE (nats/token)",
        "ΔCE ±",
        "KL to base",
        "KL ±",
        "log-prob shift",
        "log-prob ±",
    ]
    assert list(table.columns)[-1] == "retention"  # secondary, last
    assert table.loc["a", "net forgot (pts)"] == -1.67 and table.loc["a", "net ± (pts)"] == 2.29
    learned = learning_table([_run("a", **extra)])
    assert list(learned.columns)[0] == "recall" and learned.loc["a", "MC control"] == 0.6


def test_run_differences_give_b_minus_a_with_the_combined_error():
    from tutorial_lib.run_tables import run_differences

    a = _run("a", domain_recall_after_stderr=0.06, forgetting=0.05, forgetting_stderr=0.03)
    b = _run(
        "b",
        general_ce_change=0.71234,
        general_ce_change_stderr=0.12,
        domain_recall_after=0.8,
        domain_recall_after_stderr=0.08,
        forgetting=0.1,
        forgetting_stderr=0.04,
    )
    table = run_differences({"wider": (a, b)})
    ce = table.loc[("wider", "ΔCE")]
    assert ce["b − a"] == pytest.approx(0.3) and ce["±"] == pytest.approx(0.13)
    assert ce["|b − a| / ±"] == pytest.approx(0.3 / 0.13, abs=1e-3)
    recall = table.loc[("wider", "recall")]
    assert recall["b − a"] == pytest.approx(0.3) and recall["±"] == pytest.approx(0.1)
    net = table.loc[("wider", "net forgot (pts)")]  # fractions shown as points
    assert net["b − a"] == pytest.approx(5.0) and net["±"] == pytest.approx(5.0)


def test_run_differences_leave_an_unmeasured_error_empty():
    from tutorial_lib.run_tables import run_differences

    table = run_differences({"p": (_run("a", kl_to_base_stderr=None), _run("b"))})
    kl = table.loc[("p", "KL to base")]
    assert kl["b − a"] == 0.0
    assert kl["±"] != kl["±"] and kl["|b − a| / ±"] != kl["|b − a| / ±"]  # NaN: not made up
