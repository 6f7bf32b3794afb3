"""The noise floor: how far a run's forgetting numbers move when it should forget nothing.

Defined once: the control run of a run is the same method, learning rate, steps, batch and seed,
trained on general text of the replay pool's kind (`data/replay_text.jsonl`, never the passages
that measure cross-entropy) instead of the domain chats, and measured the same way
(`RunSpec(train_on="general")`). Any perturbation of a model moves items near a tie both ways;
the control shows how much, so a lesson says "forgot" only beyond it. Lesson 07's committed
comparison holds one per method at its default rate (`tutorial-lib compare --floors`);
`tutorial-lib train --floor` runs one beside its run.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tutorial_lib.results import COMMITTED, find_committed_floor
from tutorial_lib.runspec import RunSpec

# what a floor is not about: cost and the training curve (a run's summary keeps them)
NOT_FLOOR = {
    "loss_history",
    "trajectory",
    "peak_memory_bytes",
    "optimizer_state_bytes",
    "sec_per_step",
    "tokens_per_sec",
    "checkpoint_bytes",
    "trainable_params",
    "total_params",
    "trainable_percent",
}


def floor_spec(spec: RunSpec) -> RunSpec:
    """The control run of `spec`: the same knobs, trained on general text (no replay to mix,
    no mid-run points)."""
    return replace(spec, train_on="general", replay=0.0, eval_at=())


def floor_numbers(summary: dict) -> dict:
    """A control run's summary without its costs: its forgetting numbers (and its domain
    accuracy, which should not move either), with the spec that says what it ran."""
    return {k: v for k, v in summary.items() if k not in NOT_FLOOR}


def floor_lines(run: dict, floor: dict) -> str:
    """The floor beside a run, as `tutorial-lib train --floor` prints it."""

    def change(s: dict) -> str:
        return f"{100 * s['forgetting']:+.1f} ± {100 * s['forgetting_stderr']:.1f} pts"

    return "\n".join(
        [
            f"noise floor      the same run on general text: probe {floor['probe_accuracy_before']:.3f}"
            f" -> {floor['probe_accuracy_after']:.3f} (retention {floor['retention']:.3f})",
            f"                 general text CE {floor['general_ce_before']:.3f}"
            f" -> {floor['general_ce_after']:.3f}",
            f"forgetting       this run {change(run)}; its floor {change(floor)}",
        ]
    )


def floor_markdown(floors: list[dict]) -> str:
    """A comparison's floors as a Markdown table, after its main one (a failed floor: its error)."""
    lines = [
        "",
        "| noise floor of | lr | steps | forgetting (pts) | ± (pts) | retention | general CE |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in floors:
        if "error" in f:
            message = f"{f['error']['type']}: {f['error']['message']}".replace("|", "/")
            lines.append(f"| {f['method']} | {f['lr']:g} | | {message} | | | |")
            continue
        lines.append(
            f"| {f['method']} | {f['lr']:g} | {f['steps']} | {100 * f['forgetting']:+.1f} | "
            f"{100 * f['forgetting_stderr']:.1f} | {f['retention']:.3f} | "
            f"{f['general_ce_after']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def committed_floor_note(method: str, run: dict | None = None, name: str = COMMITTED) -> str:
    """One line naming the committed floor a run of `method` would be read against, and whether
    it was measured at that run's rate and length; or why there is none."""
    floor, why = find_committed_floor(method, name)
    if floor is None:
        return f"noise floor      none committed for {method}: {why}; --floor measures one"
    budget = floor["budget"]
    text = (
        f"noise floor      committed for {method} (lr {floor['lr']:g}, {floor['steps']} steps, "
        f"{budget.get('domain_facts')} facts, {floor.get('probe_n_items')} probe items): "
        f"forgetting {100 * floor['forgetting']:+.1f} ± {100 * floor['forgetting_stderr']:.1f} pts"
    )
    if run is not None and (run["lr"], run["steps"]) != (floor["lr"], floor["steps"]):
        text += f"; this run differs (lr {run['lr']:g}, {run['steps']} steps): --floor for its own"
    return text


# the measures a run is read against its floor by: (summary key, its standard error's key, label)
FLOOR_MEASURES = (
    ("general_ce_change", "general_ce_change_stderr", "ΔCE on general text (nats/token)"),
    ("kl_to_base", "kl_to_base_stderr", "KL(base ‖ tuned) (nats/token)"),
    ("probe_logprob_shift", "probe_logprob_shift_stderr", "log-prob of probe answers"),
    ("forgetting", "forgetting_stderr", "probe forgetting (lost − gained) / n"),
)
BEYOND_SE = 2.0  # a difference beyond this many of its standard errors is read as real


def against_floor(run: dict, floor: dict, z: float = BEYOND_SE):
    """Each forgetting measure of `run` beside its floor's: the difference, its standard error
    (the two runs' errors combined as independent: a conservative bound, since both are measured
    on the same items) and a verdict, "beyond the floor" only when the difference exceeds `z`
    standard errors in the direction of damage. A measure either run lacks is left out."""
    import pandas as pd

    rows = []
    for key, se_key, label in FLOOR_MEASURES:
        a, b = run.get(key), floor.get(key)
        if a is None or b is None:
            continue
        se_a, se_b = run.get(se_key), floor.get(se_key)
        diff = a - b
        if key == "probe_logprob_shift":
            diff = -diff  # damage lowers the correct answers' log-probability
        se = math.sqrt(se_a**2 + se_b**2) if se_a is not None and se_b is not None else None
        if se is None:
            verdict = "no error estimate"
        elif diff > z * se:
            verdict = "beyond the floor"
        elif diff < -z * se:
            verdict = "below the floor"
        else:
            verdict = "within the floor"
        rows.append(
            {
                "measure": label,
                "this run": a,
                "floor": b,
                "damage beyond floor": diff,
                "±": se,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows).set_index("measure").round(4)
