"""Does this transfer? Lesson 07's rankings at a bigger budget and on a bigger model.

The bigger budget is the committed scale study (`benchmarks/scale_study.py`, written from
`tutorial-lib compare` runs at 4× and 16× the lesson's facts and steps, read by `scale`); the
bigger model is peft's published method comparison (`literature`). Nothing here trains: it reads
the committed files and puts them in tables and one picture, the rank of each method in each.
"""

from __future__ import annotations

import json
from pathlib import Path

from tutorial_lib import literature

STUDY_FILE = "scale-study.json"
# the study's measure: (what the lesson calls it, higher is better, peft's field or None)
MEASURES = {
    "recall": ("recall", True, "test_accuracy"),
    "ce": ("ΔCE", False, "forgetting_ce"),
    "suite_drop": ("suite drop", False, None),
}
PUBLISHED = "peft, Llama-3.2-3B"  # the column of the published runs


def committed_study(path: str | Path | None = None) -> dict:
    """The committed scale study (`benchmarks/results/scale-study.json`)."""
    from tutorial_lib.data import results_dir

    path = Path(path) if path is not None else results_dir() / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it comes with a clone of the repository; "
            "`python benchmarks/scale_study.py` writes it from the committed runs"
        )
    return json.loads(path.read_text())


def budgets(study: dict) -> list[str]:
    """The study's budgets, the lesson's first (1×, 4×, 16×: those it read)."""
    return list(study["budgets"])


def shared_methods(study: dict) -> list[str]:
    """The methods every budget measured, in the base budget's order."""
    rows = [{r["method"] for r in b["rows"]} for b in study["budgets"].values()]
    base = [r["method"] for r in study["budgets"][study["base"]]["rows"]]
    return [m for m in base if all(m in got for got in rows)]


def mean_pm(stats: dict, digits: int = 3) -> str:
    """A study cell as text: its mean ± its standard error ("–" where nothing was measured)."""
    if stats["mean"] is None:
        return "–"
    se = "" if stats["se"] is None else f" ± {stats['se']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{se}"


def budget_table(study: dict, measures: tuple[str, ...] = ("recall", "ce", "suite_drop")):
    """Per method, each measure at each budget: the mean over seeds ± its standard error (one
    seed: the run's own error); the seeds each budget ran in the last columns."""
    import pandas as pd

    methods = shared_methods(study)
    rows = {name: {r["method"]: r for r in b["rows"]} for name, b in study["budgets"].items()}
    columns = {}
    for measure in measures:
        for name in rows:
            label = f"{MEASURES[measure][0]} {name}"
            columns[label] = [mean_pm(rows[name][m][measure]) for m in methods]
    for name in rows:
        columns[f"seeds {name}"] = [len(rows[name][m]["seeds"]) for m in methods]
    return pd.DataFrame(columns, index=pd.Index(methods, name="method"))


def agreement_table(study: dict):
    """Kendall's τ between the base budget's ranking and each larger one's, per measure, with
    its bootstrap interval, its standard error were the rankings unrelated, and the pairs of
    methods each budget orders the same way and the opposite way."""
    import pandas as pd

    rows = []
    for pair, measures in study["agreement"].items():
        for measure, a in measures.items():
            low, high = a["ci95"] if a["ci95"] is not None else (None, None)
            rows.append(
                {
                    "budgets": pair,
                    "measure": MEASURES.get(measure, (measure,))[0],
                    "methods": a["n"],
                    "Kendall τ": a["tau"],
                    "95 % low": low,
                    "95 % high": high,
                    "se if unrelated": a["se_null"],
                    "same order": a["same_order"],
                    "opposite": a["opposite_order"],
                    "opposite beyond errors": a["opposite_beyond_both"],
                }
            )
    return pd.DataFrame(rows).set_index(["budgets", "measure"])


def verdict_table(study: dict):
    """Each of lesson 07's verdicts, where the lesson states it, and whether it holds, weakens
    or reverses at each larger budget (`verdicts.check`)."""
    import pandas as pd

    table: dict[str, dict] = {}
    for budget, got in study["verdicts"].items():
        for v in got["checked"]:
            row = table.setdefault(v["id"], {"verdict": v["says"], "in lesson 07": v["where"]})
            row[f"at {budget}"] = v["status"]
    for budget, got in study.get("verdicts_widened", {}).items():
        for v in got["checked"]:
            table[v["id"]][f"at {budget}, seeds' spread"] = v["status"]
    return pd.DataFrame(list(table.values()), index=list(table))


def statuses(study: dict, budget: str, widened: bool = False) -> dict[str, str]:
    """Each verdict's id and its status at `budget` (holds, weakens or reverses); `widened`:
    with a one-seed budget's errors widened by the seeds' spread (`verdicts.study`)."""
    got = study["verdicts_widened" if widened else "verdicts"][budget]
    return {v["id"]: v["status"] for v in got["checked"]}


def ranks(study: dict, runs: list | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """Per measure: per column (each budget, then peft's runs), each method's rank there, 1 the
    best (most recall, least forgetting), among the methods that column measured. Methods
    every budget ran; peft's column ranks those of them peft ran too (its best run each)."""
    methods = shared_methods(study)
    published = literature.best_runs(runs if runs is not None else literature.load()[0])
    out: dict[str, dict[str, dict[str, int]]] = {}
    for measure, (_, higher, peft_field) in MEASURES.items():
        columns = {}
        for name, b in study["budgets"].items():
            values = {r["method"]: r[measure]["mean"] for r in b["rows"] if r["method"] in methods}
            columns[name] = _rank({m: v for m, v in values.items() if v is not None}, higher)
        if peft_field is not None:
            theirs = {m: getattr(published[m], peft_field) for m in methods if m in published}
            columns[PUBLISHED] = _rank(theirs, higher)
        out[measure] = columns
    return out


def _rank(values: dict[str, float], higher: bool) -> dict[str, int]:
    """1 for the best value, ties sharing the better rank."""
    ordered = sorted(values.values(), reverse=higher)
    return {m: ordered.index(v) + 1 for m, v in values.items()}


def rank_plot(study: dict, runs: list | None = None, measures: tuple[str, ...] = ("recall", "ce")):
    """One panel per measure: each method's rank (1 at the top) at each budget and in peft's
    runs, a line per method; a method a column did not measure has no point there."""
    import matplotlib.pyplot as plt

    got = ranks(study, runs)
    fig, axes = plt.subplots(1, len(measures), figsize=(5.2 * len(measures), 3.8), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        columns = list(got[measure])
        first = got[measure][columns[0]]
        for method in shared_methods(study):
            xs = [i for i, c in enumerate(columns) if method in got[measure][c]]
            ys = [got[measure][columns[i]][method] for i in xs]
            ax.plot(xs, ys, marker="o", label=method)
        for rank in sorted(set(first.values())):  # tied methods share one label
            names = ", ".join(m for m in first if first[m] == rank)
            ax.annotate(names, (0, rank), xytext=(-8, 0), textcoords="offset points",
                        ha="right", va="center", fontsize=8)  # fmt: skip
        label, higher, _ = MEASURES[measure]
        best = "most" if higher else "least"
        ax.set_title(f"rank by {label} (1 = {best})")
        ax.set_xticks(range(len(columns)), columns, fontsize=8)
        ax.set_xlim(-1.6, len(columns) - 0.6)
        ax.invert_yaxis()
        ax.set_ylabel("rank")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig
