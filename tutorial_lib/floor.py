"""The noise floor: how far a run's forgetting numbers move when it should forget nothing.

Defined once: the control run of a run is the same method, learning rate, steps, batch and seed,
trained on general text of the replay pool's kind (`data/replay_text.jsonl`, never the passages
that measure cross-entropy) instead of the domain chats, and measured the same way
(`RunSpec(train_on="general")`). Any perturbation of a model moves items near a tie both ways;
the control shows how much, so a lesson says "forgot" only beyond it. Lesson 07's committed
comparison holds one per method at its default rate (`tutorial-lib compare --floors`);
`tutorial-lib train --floor` runs one beside its run.

A floor must not overfit its pool. The pool is small (100 passages, about 200 windows of a chat's
length, 12,000 tokens): at the lessons' budget (28 steps of 8) a floor sees it about once, but at
4× (112 steps) four and a half times, and then it memorises the pool and its general-text CE rises
(measured: +0.4 to +1.3 nats for the seven headline methods, against -0.3 to +0.3 at 28 steps),
which is overfitting, not churn. So a floor trains at most `FLOOR_MAX_PASSES` passes over the pool:
`floor_spec` caps its steps, and every run on general text is checked against the cap where its
examples are built (`runspec.check_floor_steps`), so no path trains a longer one. A capped floor
is a smaller perturbation than its run, so it measures churn at the low end: a run beyond it is
beyond churn; a run within it may still be within a longer floor's.
"""

from __future__ import annotations

import math
from dataclasses import replace

from tutorial_lib.results import COMMITTED, find_committed_floor
from tutorial_lib.runspec import FLOOR_MAX_PASSES, RunSpec, floor_step_cap  # noqa: F401

# The cap's rule lives with RunSpec, which every run passes through (`runspec.check_floor_steps`);
# `floor.FLOOR_MAX_PASSES` and `floor.floor_step_cap` name it here too.

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


def pool_windows(tokenizer, profile, task: str | None = None, train_file: str | None = None) -> int:
    """How many training sequences a floor's pool holds for this profile's chats (the windows
    `experiment.training_examples(train_on="general")` trains on): the pool is cut into windows
    as long as the longest chat, so it depends on the chats (`train_file`: a learner's own)."""
    from tutorial_lib import data
    from tutorial_lib.experiment import training_examples

    task = task or data.TASKS[0]
    examples = training_examples(tokenizer, profile, 0.0, 0, task, "general", train_file)
    return len(examples)


def floor_spec(spec: RunSpec, where=None) -> RunSpec:
    """The control run of `spec`: the same knobs, trained on general text (no replay to mix,
    no mid-run points), its steps capped at `FLOOR_MAX_PASSES` passes over the pool.

    `where` is the `Baseline` the floor will run on (default: the one `run_experiment` uses for
    the spec's task); its profile, model and task size the pool. A spec within the cap keeps its
    steps as given (None: the profile's)."""
    from tutorial_lib.baseline import Baseline

    where = where or Baseline(task=spec.task)
    cap, _ = floor_cap(where.profile, where.model_name, spec.task, spec.train_file)
    steps = spec.steps if (spec.steps or where.profile.train_steps) <= cap else cap
    return replace(spec, train_on="general", replay=0.0, eval_at=(), steps=steps)


def floor_cap(profile, model_name: str, task: str | None = None, train_file: str | None = None):
    """The most steps a floor may train on `model_name`'s tokenizer at `profile` (the rule of
    `floor_step_cap`), and the pool's windows it counted: (cap, windows)."""
    from transformers import AutoTokenizer

    from tutorial_lib.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_name))
    windows = pool_windows(tokenizer, profile, task, train_file)
    return floor_step_cap(windows, profile.batch_size), windows


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


FLOOR_MEASURES = {  # measure: its name in a table (each with `<measure>_stderr` in a summary)
    "general_ce_change": "ΔCE",
    "kl_to_base": "KL",
    "probe_logprob_shift": "log-prob shift",
    "forgetting": "net forgot",
}
WORSE_WHEN_LOWER = {"probe_logprob_shift"}  # the right answers became less likely


def beyond_floor(run: dict, floor: dict, measure: str, z: float = 2.0) -> dict:
    """`measure` of a run minus its floor's, with the difference's standard error, and the
    verdict: "beyond" when the run is worse than its floor by more than `z` standard errors,
    "below" when better by as much, else "within". The two runs share the base, the items and
    the passages, but only their own errors are recorded, so the error is taken as for
    independent figures (√(se_run² + se_floor²)): larger than the paired one, so a verdict of
    "beyond" is conservative."""
    a, b = run.get(measure), floor.get(measure)
    se_a, se_b = run.get(f"{measure}_stderr"), floor.get(f"{measure}_stderr")
    if None in (a, b, se_a, se_b):
        return {"measure": measure, "difference": None, "se": None, "verdict": "not measured"}
    diff, se = a - b, math.hypot(se_a, se_b)
    worse = -diff if measure in WORSE_WHEN_LOWER else diff
    verdict = "beyond" if worse > z * se else "below" if worse < -z * se else "within"
    return {"measure": measure, "difference": diff, "se": se, "verdict": verdict}


def floor_table(runs: list[dict], floor: dict, z: float = 2.0):
    """One row per finished run: each forgetting measure's difference from the floor run
    (`beyond_floor`: ± its se, and whether the run is beyond, within or below the floor), with
    the probe items each lost and gained; the floor itself as the first row."""
    import pandas as pd

    rows = []
    for run in [floor, *runs]:
        if "error" in run:
            continue
        row = {"run": run.get("label") or run["method"]}
        row["lost / gained"] = f"{run.get('probe_lost')} / {run.get('probe_gained')}"
        for measure, name in FLOOR_MEASURES.items():
            d = beyond_floor(run, floor, measure, z)
            scale = 100 if measure == "forgetting" else 1  # points, as the lessons print it
            diff = None if d["difference"] is None else round(scale * d["difference"], 3)
            se = None if d["se"] is None else round(scale * d["se"], 3)
            row[f"{name} − floor"], row[f"{name} ±"], row[name] = diff, se, d["verdict"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


FLOOR_LABELS = {  # the same measures, named in full (one run's table, `against_floor`)
    "general_ce_change": "ΔCE on general text (nats/token)",
    "kl_to_base": "KL(base ‖ tuned) (nats/token)",
    "probe_logprob_shift": "log-prob of probe answers",
    "forgetting": "probe forgetting (lost − gained) / n",
}


def against_floor(run: dict, floor: dict, z: float = 2.0):
    """One run beside its floor, a row per forgetting measure (`beyond_floor`): both values,
    the damage beyond the floor (signed so that positive is worse, also for the answers'
    log-probability, which damage lowers), its standard error and the verdict. A measure
    either run lacks is left out; one without an error says so."""
    import pandas as pd

    rows = []
    for measure, label in FLOOR_LABELS.items():
        a, b = run.get(measure), floor.get(measure)
        if a is None or b is None:
            continue
        d = beyond_floor(run, floor, measure, z)
        damage = -(a - b) if measure in WORSE_WHEN_LOWER else a - b
        verdict = "no error estimate" if d["se"] is None else f"{d['verdict']} the floor"
        rows.append(
            {
                "measure": label,
                "this run": a,
                "floor": b,
                "damage beyond floor": damage,
                "±": d["se"],
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows).set_index("measure").round(4)
