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
