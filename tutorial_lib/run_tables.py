"""A sweep's runs in the order the measurement issue reads them: forgetting led by the continuous
measures (general-text cross-entropy change ± its standard error, KL to the base), then the
probe's items lost and gained with the exact sign test, then retention; learning as recall, with
multiple-choice accuracy beside it.

A record is a run's summary (`experiment.summarised_run`); failed runs ("error") are left out.
A figure a run did not measure (an older summary, KL without the base's log-probabilities) is
shown empty, never made up.
"""

from __future__ import annotations

COLUMNS = {  # column: the summary key it shows
    "ΔCE (nats/token)": "general_ce_change",
    "ΔCE ±": "general_ce_change_stderr",
    "KL to base": "kl_to_base",
    "KL ±": "kl_to_base_stderr",
    "probe lost": "probe_lost",
    "probe gained": "probe_gained",
    "sign test p": "probe_sign_test_p",
    "retention": "retention",
    "recall": "domain_recall_after",
    "recall ±": "domain_recall_change_stderr",  # paired se of recall's change
    "MC acc": "domain_accuracy_after",
}


def measures_table(runs: list[dict]):
    """One row per finished run: ΔCE ± se, KL ± se, probe items lost / gained and the sign test's
    p, retention, then recall (± the paired se of its change) and MC accuracy."""
    return _table(runs, COLUMNS)


FORGETTING_COLUMNS = {  # the continuous measures first, then the items counted both ways
    "ΔCE (nats/token)": "general_ce_change",
    "ΔCE ±": "general_ce_change_stderr",
    "KL to base": "kl_to_base",
    "KL ±": "kl_to_base_stderr",
    "log-prob shift": "probe_logprob_shift",
    "log-prob ±": "probe_logprob_shift_stderr",
    "probe lost": "probe_lost",
    "probe gained": "probe_gained",
    "sign test p": "probe_sign_test_p",
    "net forgot (pts)": "forgetting",
    "net ± (pts)": "forgetting_stderr",
    "retention": "retention",
}
LEARNING_COLUMNS = {  # recall by generation first; MC accuracy beside it, and its control
    "recall": "domain_recall_after",
    "recall change": "domain_recall_change",
    "recall ±": "domain_recall_change_stderr",
    "MC acc": "domain_accuracy_after",
    "MC control": "domain_control_accuracy_after",
}
POINTS = {"forgetting", "forgetting_stderr"}  # fractions shown as percentage points


def _table(runs: list[dict], columns: dict[str, str]):
    import pandas as pd

    rows = []
    for run in runs:
        if "error" in run:
            continue
        row = {"run": run.get("label") or run["method"]}
        for column, key in columns.items():
            value = run.get(key)
            row[column] = 100 * value if key in POINTS and value is not None else value
        rows.append(row)
    if not rows:
        raise ValueError("no finished run to show (every record carries an error)")
    table = pd.DataFrame(rows).set_index("run")
    for column in ("probe lost", "probe gained"):
        if column in table:
            table[column] = table[column].astype("Int64")  # counts stay whole numbers
    return table.round(3)


def forgetting_table(runs: list[dict]):
    """One row per finished run, forgetting only, in the order it should be read: general-text
    ΔCE ± se and KL(base ‖ tuned) ± se, the probe's mean log-probability shift of the correct
    answers ± se (negative: the right answers became less likely), then probe items lost and
    gained with the exact sign test's p, the net change in points with its paired se (positive:
    net loss), and retention last (the share of the base's right items still right: it counts
    losses only)."""
    return _table(runs, FORGETTING_COLUMNS)


def learning_table(runs: list[dict]):
    """One row per finished run, learning only: recall by generation (level, change and the
    paired se of the change), then multiple-choice accuracy and the same choices scored after an
    unrelated question (the control: what survives it is recognition of the trained string)."""
    return _table(runs, LEARNING_COLUMNS)


DIFFERENCES = {  # measure: (record key, key of its standard error)
    "recall": ("domain_recall_after", "domain_recall_after_stderr"),
    "ΔCE": ("general_ce_change", "general_ce_change_stderr"),
    "KL to base": ("kl_to_base", "kl_to_base_stderr"),
    "net forgot (pts)": ("forgetting", "forgetting_stderr"),
}


def run_differences(pairs: dict[str, tuple[dict, dict]]):
    """For each named pair of runs (a, b) that differ in one setting: b − a for each measure of
    `DIFFERENCES`, with √(se_a² + se_b²) beside it (the runs' errors taken as independent: their
    items are shared, so this errs on the wide side) and the ratio |b − a| / se. Empty where a
    run did not measure a figure or its error (too few items), never made up."""
    import math

    import pandas as pd

    rows = []
    for name, (a, b) in pairs.items():
        for measure, (key, se_key) in DIFFERENCES.items():
            scale = 100 if key == "forgetting" else 1
            diff = se = ratio = None
            if a.get(key) is not None and b.get(key) is not None:
                diff = scale * (b[key] - a[key])
                errors = (a.get(se_key), b.get(se_key))
                if None not in errors:
                    se = scale * math.hypot(*errors)
                    ratio = abs(diff) / se if se > 0 else None
            rows.append(
                {"pair": name, "measure": measure, "b − a": diff, "±": se, "|b − a| / ±": ratio}
            )
    return pd.DataFrame(rows).set_index(["pair", "measure"]).astype(float).round(3)
