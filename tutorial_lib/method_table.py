"""A comparison read on the measures that carry a verdict: per method, over its seeds.

Issue 27's table for every method at one budget: what it learned (recall by generation first,
multiple-choice accuracy and its control beside it), what it forgot (the general-text
cross-entropy change and KL to the base first, then the probe's and each suite task's items
lost and gained), each as mean ± sample standard deviation over seeds, and the method's noise
floor beside it with the verdict `floor.beyond_floor` gives (a run "forgot" only beyond it).

The comparison's records (`compare.Comparison.records`) and floors (`.floors`) are the input;
nothing here trains.
"""

from __future__ import annotations

import math
import statistics

from tutorial_lib.floor import beyond_floor
from tutorial_lib.matched import by_method

LEARNING = {  # record key: column
    "domain_recall_after": "recall",
    "domain_accuracy_after": "MC accuracy",
    "domain_control_accuracy_after": "MC control",
}
FORGETTING = {
    "general_ce_change": "ΔCE",
    "kl_to_base": "KL",
    "probe_lost": "probe lost",
    "probe_gained": "probe gained",
}
FLOOR_VERDICTS = ("general_ce_change", "kl_to_base", "forgetting")  # read against the floor


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for one value; both None for none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def suite_changes(run: dict) -> dict[str, dict]:
    """Per suite task of one run: accuracy change (after − before), items lost and gained,
    the sign test's p; the composite's change under "composite". Empty without a suite."""
    before, after = run.get("suite_accuracy_before") or {}, run.get("suite_accuracy_after") or {}
    out = {
        task: {
            "change": after[task] - before[task],
            "lost": run["suite_lost"][task],
            "gained": run["suite_gained"][task],
            "p": (run.get("suite_sign_test_p") or {}).get(task),
            "n": run["suite_n_items"][task],
        }
        for task in before
        if task in after
    }
    if run.get("suite_composite_before") is not None:
        change = run["suite_composite_after"] - run["suite_composite_before"]
        out["composite"] = {"change": change}
    return out


def method_rows(records: list[dict], floors: list[dict] = ()) -> list[dict]:
    """One row per method: lr, seeds, each learning and forgetting measure's mean and sd over
    seeds, the suite per task (mean change, mean lost and gained), and, where the method has a
    floor, the floor's own figures and seed 0's verdict against it per measure."""
    floor_of = {f["method"]: f for f in floors if "error" not in f}
    rows = []
    for method, runs in by_method(records).items():
        row = {"method": method, "lr": runs[0]["lr"], "seeds": len(runs)}
        for key in (*LEARNING, *FORGETTING):
            row[key], row[f"{key}_sd"] = _mean_sd([r.get(key) for r in runs])
        per_task: dict[str, dict] = {}
        for run in runs:
            for task, c in suite_changes(run).items():
                for k, v in c.items():
                    per_task.setdefault(task, {}).setdefault(k, []).append(v)
        row["suite"] = {
            task: {k: _mean_sd(v)[0] for k, v in c.items() if k != "p"}
            | {"change_sd": _mean_sd(c["change"])[1]}
            for task, c in per_task.items()
        }
        floor = floor_of.get(method)
        row["floor"] = None
        if floor is not None:
            first = min(runs, key=lambda r: r.get("seed") or 0)
            row["floor"] = {key: floor.get(key) for key in (*FORGETTING, "forgetting")}
            row["floor"]["suite"] = suite_changes(floor)
            row["verdicts"] = {m: beyond_floor(first, floor, m)["verdict"] for m in FLOOR_VERDICTS}
            row["first"] = {key: first.get(key) for key in (*FORGETTING, "forgetting")}
        rows.append(row)
    return rows


def _cell(mean: float | None, sd: float | None, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def markdown(rows: list[dict]) -> str:
    """The rows as one Markdown table: learning, then forgetting, each mean ± sd over seeds
    (the floors have a table of their own, `floor_markdown`)."""
    head = ["method", "lr", "seeds", *LEARNING.values(), *FORGETTING.values()]
    head += ["suite composite Δ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["method"], f"{row['lr']:g}", str(row["seeds"])]
        cells += [_cell(row[k], row[f"{k}_sd"], 3) for k in LEARNING]
        cells += [_cell(row[k], row[f"{k}_sd"], 3) for k in ("general_ce_change", "kl_to_base")]
        cells += [_cell(row[k], row[f"{k}_sd"], 1) for k in ("probe_lost", "probe_gained")]
        comp = row["suite"].get("composite")
        cells.append(_cell(comp["change"], comp["change_sd"], 3) if comp else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def floor_markdown(rows: list[dict]) -> str:
    """Each method's seed-0 run beside its noise floor (the same method, rate and steps on
    general text): ΔCE, KL and the probe's items lost / gained of both, with the run's verdict
    against the floor (`floor.beyond_floor`: beyond, within or below, at 2 standard errors).
    Methods without a floor are left out."""
    head = ["method", "ΔCE run", "ΔCE floor", "ΔCE", "KL run", "KL floor", "KL"]
    head += ["probe −lost/+gained run", "floor", "net forgetting"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        floor, verdicts, first = row.get("floor"), row.get("verdicts", {}), row.get("first")
        if not floor or not first:
            continue
        cells = [row["method"]]
        for key in ("general_ce_change", "kl_to_base"):
            cells += [f"{first[key]:.3f}", f"{floor[key]:.3f}", verdicts[key]]
        cells.append(f"−{first['probe_lost']} / +{first['probe_gained']}")
        cells.append(f"−{floor['probe_lost']} / +{floor['probe_gained']}")
        cells.append(verdicts["forgetting"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def suite_markdown(rows: list[dict]) -> str:
    """Per method and suite task: the mean accuracy change ± sd over seeds, and the mean items
    lost / gained; the floor's change beside it where there is one."""
    tasks = sorted({t for row in rows for t in row["suite"] if t != "composite"})
    if not tasks:
        return ""
    lines = ["| method | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for row in rows:
        cells = [row["method"]]
        for task in tasks:
            c = row["suite"].get(task)
            if c is None:
                cells.append("–")
                continue
            text = f"{c['change']:+.3f}" + (
                "" if c["change_sd"] is None else f" ± {c['change_sd']:.3f}"
            )
            text += f" (−{c['lost']:.1f} / +{c['gained']:.1f})"
            floor = (row["floor"] or {}).get("suite", {}).get(task)
            if floor:
                text += f"; floor {floor['change']:+.3f}"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COSTS = {  # summary key (`compare.with_fresh_memory`): (column, scale)
    "trainable_percent": ("trainable %", 1),
    "training_memory_bytes": ("training memory (GiB, fresh process)", 2**-30),
    "checkpoint_bytes": ("checkpoint (MiB)", 2**-20),
}


def costs(summary: list[dict]):
    """What each method costs, one row per method that finished a run: its trainable share,
    the memory training needs (measured alone, in a fresh process, batch 8 of 128 tokens) and
    the file that keeps the result. Time per step is left out: a comparison's runs share the
    machine, so their clocks are not comparable (lesson 07 times its own runs)."""
    import pandas as pd

    rows = []
    for row in summary:
        if not row["seeds"]:
            continue
        out = {"method": row["method"], "family": row["family"]}
        for key, (column, scale) in COSTS.items():
            mean = (row.get(key) or {}).get("mean")
            out[column] = None if mean is None else mean * scale
        rows.append(out)
    return pd.DataFrame(rows).set_index("method").round(3)
