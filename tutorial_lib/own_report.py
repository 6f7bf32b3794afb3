"""Lesson 08's measures of a run on a learner's own data, as tables: held-out loss and recall on
their file, forgetting on the general measures (probe, general text, KL, published suite).

The general measures are the curriculum's own (`baseline.evaluate_suite`) on a suite with no
domain questions: the learner's data is measured by its held-out loss and recall instead.
"""

from __future__ import annotations

from tutorial_lib import data
from tutorial_lib.baseline import Suite, _published_items, evaluate_suite
from tutorial_lib.choices import paired_stderr
from tutorial_lib.config import Profile
from tutorial_lib.evaluate import Evaluation, paired_measures
from tutorial_lib.recall import RecallResult, recall_change


def general_suite(profile: Profile) -> Suite:
    """The profile's probe items, general passages and published suite; no domain questions."""
    return Suite(
        probe=data.load_probe(limit=profile.probe_items),
        domain=[],
        general=data.load_general_text(limit=profile.general_items),
        published=_published_items(profile),
    )


def measure_general(model, tokenizer, suite: Suite, profile: Profile, base=None) -> Evaluation:
    """The general measures of `model` as it is now; KL to the base where `base` holds the base's
    log-probabilities (`general_text.capture_base`)."""
    return evaluate_suite(model, tokenizer, suite, profile.eval_batch_size, base, recall=False)


def _row(measure: str, before, after, change=None, stderr=None, n=None) -> dict:
    if change is None and before is not None and after is not None:
        change = after - before
    return {
        "measure": measure,
        "before": before,
        "after": after,
        "change": change,
        "± (change)": stderr,
        "items": n,
    }


def own_table(loss_before: float, loss_after: float, recall_before, recall_after, n_chats: int):
    """Held-out loss (nats per assistant token) and recall on the learner's held-out chats."""
    import pandas as pd

    rc = recall_change(recall_before, recall_after)
    rows = [_row("held-out loss (nats/token)", loss_before, loss_after, n=n_chats)]
    if rc:
        rows.append(
            _row(
                "held-out recall",
                rc["domain_recall_before"],
                rc["domain_recall_after"],
                stderr=rc["domain_recall_change_stderr"],
                n=rc["domain_recall_n_items"],
            )
        )
        rows.append(_row("recall: items gained", None, None, rc["domain_recall_gained"]))
        rows.append(_row("recall: items lost", None, None, rc["domain_recall_lost"]))
    return pd.DataFrame(rows).set_index("measure")


def forgetting_table(before: Evaluation, after: Evaluation):
    """The general measures before and after: general-text CE (change with its bootstrap
    error), KL(base ‖ tuned), probe accuracy with items lost and gained, and each published
    task's accuracy (change with its paired error)."""
    import pandas as pd

    m = paired_measures(before, after)
    rows = [
        _row(
            "general-text CE (nats/token)",
            before.general_ce,
            after.general_ce,
            m["general_ce_change"],
            m["general_ce_change_stderr"],
            m["general_n_passages"],
        ),
        _row(
            "KL(base ‖ tuned)",
            None,
            None,
            m["kl_to_base"],
            m["kl_to_base_stderr"],
            m["kl_n_passages"],
        ),
        _row(
            "probe accuracy",
            before.probe.accuracy,
            after.probe.accuracy,
            stderr=paired_stderr(before.probe.correct, after.probe.correct),
            n=len(before.probe.ids),
        ),
        _row("probe: items lost", None, None, m["probe_lost"]),
        _row("probe: items gained", None, None, m["probe_gained"]),
    ]
    for task, b in (before.suite or {}).items():
        a = after.suite[task]
        err = paired_stderr(b.correct, a.correct)
        rows.append(_row(f"suite: {task}", b.accuracy, a.accuracy, stderr=err, n=len(b.ids)))
    return pd.DataFrame(rows).set_index("measure")


def replies_table(items: list[dict], before: RecallResult, after: RecallResult):
    """Each held-out question with its value and the replies before and after, side by side."""
    import pandas as pd

    if [i["id"] for i in items] != before.ids or before.ids != after.ids:
        raise ValueError("items, before and after must be the same questions in the same order")
    return pd.DataFrame(
        {
            "question": [i["question"] for i in items],
            "value": before.values,
            "before": before.replies,
            "after": after.replies,
            "recalled before → after": [
                f"{'yes' if b else 'no'} → {'yes' if a else 'no'}"
                for b, a in zip(before.correct, after.correct)
            ],
        }
    )
