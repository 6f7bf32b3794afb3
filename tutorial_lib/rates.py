"""A fair learning rate per method: chosen from a sweep by a rule stated before the sweep.

Choosing each method's rate by its highest domain score pushes the methods that tolerate large
rates to their most aggressive one, and so to more forgetting than the learning needs. The rule
here (`RATE_RULE`) prefers the gentlest rate that learns as much as the sweep can distinguish.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from tutorial_lib.matched import RECALL, by_method

RATE_RULE = (
    "the lowest learning rate whose mean recall over its seeds is within `margin` of the best "
    "rate's, among at least three rates; margin: one standard error of the best rate's recall"
)


def choose_rate(runs: list[dict], margin: float | None = None, key: str = RECALL) -> dict:
    """Each method's default rate by a rule written down before any sweep (`RATE_RULE`): the
    lowest rate whose mean `key` is within `margin` of the best rate's, so a method is not pushed
    to its most aggressive rate for a gain the sweep cannot tell from noise. `margin` defaults
    to one standard error of the best rate's `key` (`<key>_stderr` averaged over its seeds and
    divided by √seeds; else binomial over `domain_n_items`): a smaller margin would let one
    question's luck pick the rate, a fixed one would not shrink as the questions grow.

    Needs three measured rates per method (fewer: ValueError). Returns, per method, the chosen
    rate and the numbers that chose it."""
    chosen = {}
    for method, group in by_method(runs).items():
        rates: dict[float, list[dict]] = {}
        for run in group:
            if run.get(key) is not None:
                rates.setdefault(run["lr"], []).append(run)
        if len(rates) < 3:
            raise ValueError(
                f"{method}: a rate is chosen from at least 3 rates with {key}; got {sorted(rates)}"
            )
        means = {lr: statistics.fmean(r[key] for r in rs) for lr, rs in sorted(rates.items())}
        best = max(means, key=means.get)
        width = margin if margin is not None else _stderr_of_mean(rates[best], key)
        lr = min(r for r, value in means.items() if value >= means[best] - width)
        chosen[method] = {
            "method": method,
            "lr": lr,
            key: means[lr],
            "best_lr": best,
            f"best_{key}": means[best],
            "margin": width,
            "margin_from": "given" if margin is not None else "one standard error of the best",
            "rates": means,
            "rule": RATE_RULE,
        }
    return chosen


def _stderr_of_mean(runs: list[dict], key: str) -> float:
    """The standard error of `key`'s mean over `runs` (seeds of one rate)."""
    errors = [r.get(f"{key}_stderr") for r in runs]
    if all(e is not None for e in errors):
        return statistics.fmean(errors) / math.sqrt(len(runs))
    p, n = statistics.fmean(r[key] for r in runs), sum(r["domain_n_items"] for r in runs)
    return math.sqrt(p * (1 - p) / n)


SWEEP_RECORD = "rate-sweep.json"  # the committed fair-rate sweep (benchmarks/rate_sweep.py)
RECORD_COLUMNS = {  # column: the key of one rate's row in the record
    "recall": "domain_recall_after",
    "recall ±": "domain_recall_after_stderr",
    "MC acc": "domain_accuracy_after",
    "MC control": "domain_control_accuracy_after",
    "ΔCE": "general_ce_change",
    "ΔCE ±": "general_ce_change_stderr",
    "KL to base": "kl_to_base",
    "probe lost": "probe_lost",
    "probe gained": "probe_gained",
    "sign test p": "probe_sign_test_p",
    "s/step": "sec_per_step",
}


def swept(method: str, name: str = SWEEP_RECORD) -> dict | None:
    """`method`'s entry in the committed fair-rate sweep (its rates' numbers and the rule's
    `chosen_lr`), or None while the sweep has not finished its three rates."""
    from tutorial_lib.data import results_dir  # not results.committed: results imports rates

    path = results_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: it comes with a clone of the repository")
    return json.loads(path.read_text())["methods"].get(method)


def chosen_and_neighbour(method: str, name: str = SWEEP_RECORD) -> list[float] | None:
    """Two of the sweep's rates for a lesson to run: the rule's choice and the rate below it
    (above it when the choice is the lowest), so matched recall can be read between them; None
    while `method` is not in the record."""
    entry = swept(method, name)
    if entry is None:
        return None
    lrs = sorted(p["lr"] for p in entry["rates"])
    i = lrs.index(entry["chosen_lr"])
    return [lrs[i - 1], lrs[i]] if i > 0 else [lrs[i], lrs[i + 1]]


def sweep_table(methods: list[str], name: str = SWEEP_RECORD):
    """The committed sweep's rows for `methods`, one per (method, rate), the rule's choice
    marked; a method the record does not hold yet gets one row that says so."""
    import pandas as pd

    rows = []
    for method in methods:
        entry = swept(method, name)
        if entry is None:
            rows.append({"method": method, "lr": None, "chosen": f"not yet in {name}"})
            continue
        for point in entry["rates"]:
            row = {"method": method, "lr": point["lr"]}
            row |= {col: point.get(key) for col, key in RECORD_COLUMNS.items()}
            row["chosen"] = "◀ rule's choice" if point["lr"] == entry["chosen_lr"] else ""
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["method", "lr"]).round(3)
    for col in ("probe lost", "probe gained"):
        if col in table:
            table[col] = table[col].astype("Int64")  # counts, blank where not measured
    return table


SWEEP_RUNS = "rate-sweep-runs.jsonl"  # every run of the sweep, as the lessons record a run


def _results(name: str) -> Path:
    from tutorial_lib.data import results_dir

    return results_dir() / name


def fair_rate(method: str, record: Path | None = None) -> tuple[float, str]:
    """`method`'s fair rate and where it comes from: the committed sweep's choice
    (`SWEEP_RECORD`, by `RATE_RULE`) when the sweep has finished the method, else the registry's
    default (`get_method(method).default_lr`)."""
    from tutorial_lib.methods import get_method

    path = record or _results(SWEEP_RECORD)
    saved = json.loads(path.read_text()).get("methods", {}) if path.exists() else {}
    if method in saved:
        return saved[method]["chosen_lr"], f"the fair-rate sweep's choice ({path.name})"
    return get_method(method).default_lr, f"the registry default ({path.name} has no {method} yet)"


def swept_runs(methods: list[str], path: Path | None = None) -> list[dict]:
    """The committed sweep's run records (`SWEEP_RUNS`: each line's `result`) of `methods`, in
    the order of `methods` and then of the rates; failed runs left out."""
    path = path or _results(SWEEP_RUNS)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [r["result"] for r in rows if "error" not in r.get("result", {"error": None})]
    ordered = sorted(
        (r for r in runs if r["method"] in methods),
        key=lambda r: (methods.index(r["method"]), r["lr"]),
    )
    return [r | {"label": f"{r['method']} {r['lr']:.2g}", "group": r["method"]} for r in ordered]
