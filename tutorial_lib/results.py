"""Reading run records: a run at matched domain accuracy, tables of runs and their costs,
the best run per method, a fair rate per method (`choose_rate`), seed spreads, paired
differences and the rankings they support, the Pareto front, committed runs beside new ones,
whether a committed comparison ran on this budget, and the committed noise floor. Matched figures are defined in `matched`; the older functions
here that read them from the base are kept while lessons still call them.

A record is a run's summary (`experiment.summarised_run`, or a comparison's record with its
method's family). Records that carry "error" are runs that failed and have no numbers.
"""

from __future__ import annotations

import json
import math
import statistics

from tutorial_lib.config import Profile
from tutorial_lib.rates import RATE_RULE, choose_rate  # noqa: F401 (results.choose_rate)
from tutorial_lib.units import gib, mib

MATCHED = ("step", "forgetting", "retention", "general_ce")  # read at the target accuracy


def at_domain_accuracy(trajectory: list[dict], target: float) -> dict | None:
    """A run's numbers at the moment its domain accuracy first reached `target`, interpolated
    linearly between measured steps; None if it never did.

    Comparing methods at equal steps flatters whichever learned less; comparing them at equal
    domain accuracy asks what each paid in forgetting for the same learning.
    Superseded by `matched` (it never reads from the base); lessons 02-05 and 07 still call it.
    """
    if trajectory and trajectory[0]["domain_accuracy"] >= target:
        return {k: v for k, v in trajectory[0].items() if isinstance(v, (int, float))}
    for prev, point in zip(trajectory, trajectory[1:]):
        if point["domain_accuracy"] >= target:
            lo, hi = prev["domain_accuracy"], point["domain_accuracy"]
            t = (target - lo) / (hi - lo)
            return {
                key: prev[key] + t * (point[key] - prev[key])
                for key in point
                if isinstance(point[key], (int, float))
            }
    return None


def comparison_table(runs: list[dict], target: float | None = None):
    """One row per run (summaries from `experiment.summarised_run`): what it learned and what it
    kept at the end, and, with `target`, both again at the step it reached that domain accuracy."""
    import pandas as pd

    rows = []
    for run in runs:
        row = {
            "run": run["label"],
            "domain acc": run["domain_accuracy_after"],
            "probe acc": run["probe_accuracy_after"],
            "forgetting (pts)": 100 * run["forgetting"],
            "± (pts)": 100 * run["forgetting_stderr"],
            "retention": run["retention"],
            "general CE": run["general_ce_after"],
            "s/step": run["sec_per_step"],
        }
        if target is not None:
            at = at_domain_accuracy(run["trajectory"], target)
            row[f"step to {target:.0%}"] = at["step"] if at else None
            row[f"retention at {target:.0%}"] = at["retention"] if at else None
            row[f"CE at {target:.0%}"] = at["general_ce"] if at else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("run").round(3)


def best_per_method(runs: list[dict]) -> dict[str, dict]:
    """Each method's run that learned most at the shared budget (ties: the one that kept more),
    which is how a learning rate is calibrated per method rather than shared."""
    best: dict[str, dict] = {}
    for run in runs:
        key = (run["domain_accuracy_after"], run["retention"])
        kept = best.get(run["method"])
        if kept is None or key > (kept["domain_accuracy_after"], kept["retention"]):
            best[run["method"]] = run
    return best


def learning_rate_path(runs: list[dict]) -> list[dict]:
    """One method's runs as a path from the base (lr 0) through rising learning rates, in the
    shape `at_domain_accuracy` reads, so methods can be compared at matched domain accuracy
    without extra evaluations: the gentlest rate that learns this much, and what it kept.
    Superseded by `matched.over_rates`: a line from lr 0 overstates what gentle rates keep."""
    ordered = sorted(runs, key=lambda run: run["lr"])
    first = ordered[0]
    base = {
        "lr": 0.0,
        "domain_accuracy": first["domain_accuracy_before"],
        "retention": 1.0,
        "general_ce": first["general_ce_before"],
    }
    return [base] + [
        {
            "lr": run["lr"],
            "domain_accuracy": run["domain_accuracy_after"],
            "retention": run["retention"],
            "general_ce": run["general_ce_after"],
        }
        for run in ordered
    ]


def matched_table(runs: list[dict], target: float):
    """Per method: its best run at the budget, and its retention and cross-entropy where its
    learning-rate path first reached `target` domain accuracy (empty where it never did).
    Superseded by `matched.table` (between real runs only); lessons 03-05 still call it."""
    import pandas as pd

    rows = []
    for method, best in best_per_method(runs).items():
        path = learning_rate_path([run for run in runs if run["method"] == method])
        at = at_domain_accuracy(path, target)
        rows.append(
            {
                "method": method,
                "best lr": best["lr"],
                "domain acc": best["domain_accuracy_after"],
                "retention": best["retention"],
                "general CE": best["general_ce_after"],
                f"lr to {target:.0%}": at["lr"] if at else None,
                f"retention at {target:.0%}": at["retention"] if at else None,
                f"CE at {target:.0%}": at["general_ce"] if at else None,
            }
        )
    table = pd.DataFrame(rows).set_index("method")
    rates = ["best lr", f"lr to {target:.0%}"]  # rounding would show 3e-5 as 0.0
    return table.round({c: 4 for c in table.columns if c not in rates})


def costs_table(runs: list[dict]):
    """What each run cost: trainable share, optimizer state, peak memory, time, file size
    (sizes in MiB and GiB, `units`)."""
    import pandas as pd

    rows = [
        {
            "run": run.get("label") or run["method"],
            "trainable params": run["trainable_params"],
            "trainable %": run["trainable_percent"],
            "optimizer state (MiB)": mib(run["optimizer_state_bytes"]),
            "peak memory (GiB)": gib(run["peak_memory_bytes"])
            if run["peak_memory_bytes"]
            else None,
            "s/step": run["sec_per_step"],
            "checkpoint (MiB)": mib(run["checkpoint_bytes"]),
        }
        for run in runs
    ]
    return pd.DataFrame(rows).set_index("run").round(3)


# --- comparisons over methods and seeds ---------------------------------------------------------


def auto_target(records: list[dict]) -> float | None:
    """Halfway from the base's domain accuracy to the best run's: a level most methods reach,
    so most get a matched number. None when no run learned anything.
    Superseded by `matched.common_target`; lessons 03, 04 and `compare` still call it."""
    done = [r for r in records if "error" not in r]
    if not done:
        return None
    base = done[0]["domain_accuracy_before"]
    best = max(r["domain_accuracy_after"] for r in done)
    return base + (best - base) / 2 if best > base else None


def with_matched(record: dict, target: float | None) -> dict:
    """A record plus its numbers where its trajectory first reached `target` (None: never)."""
    if "error" in record:
        return record
    at = at_domain_accuracy(record["trajectory"], target) if target is not None else None
    matched = {f"{k}_at_target": (at.get(k) if at else None) for k in MATCHED}
    return {**record, "target": target, **matched}


COMMITTED = "compare-lesson.json"  # lesson 07's comparison, written by `tutorial-lib compare`


def committed(name: str = COMMITTED) -> dict:
    """A comparison committed under benchmarks/results (`data.results_dir`): what it ran, how,
    and on what machine."""
    from tutorial_lib.data import results_dir

    path = results_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it comes with a clone of the repository; "
            "benchmarks/README.md gives the command that writes it"
        )
    return json.loads(path.read_text())


def committed_floor(method: str, name: str = COMMITTED) -> dict | None:
    """The noise floor (`floor`) of `method` in lesson 07's committed comparison: its seed-0
    control run, with the sizes it ran on under "budget"; None when it holds none yet
    (`floor.committed_floor_note` says why, in a line a lesson can print)."""
    return find_committed_floor(method, name)[0]


BUDGET = ("domain_facts", "probe_items", "general_items", "batch_size", "max_length")


def same_budget(saved: dict, profile: Profile, steps: int) -> bool:
    """Whether a saved comparison trained and measured on this budget (data sizes and steps),
    so that its runs can be repeated exactly here."""
    sizes = saved["ran"]["profile"]
    done = [r for r in saved["records"] if "error" not in r]
    return all(sizes[k] == getattr(profile, k) for k in BUDGET) and all(
        r["steps"] == steps for r in done
    )


def find_committed_floor(method: str, name: str = COMMITTED) -> tuple[dict | None, str]:
    """`committed_floor` and, when there is none, why."""
    try:
        saved = committed(name)
    except FileNotFoundError:
        return None, f"{name} is not in this copy of the repository"
    found = [f for f in saved.get("floors", []) if f["method"] == method and "error" not in f]
    if not found:
        return None, f"{name} holds no floor run for it yet (`tutorial-lib compare --floors`)"
    floor = min(found, key=lambda f: f["seed"])
    return {**floor, "budget": saved.get("ran", {}).get("profile", {})}, ""


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min and max."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = None
    if len(values) > 1:  # statistics.stdev raises on infinities: their spread is undefined
        std = statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def paired_differences(records: list[dict], key: str, methods: list[str]) -> list[dict]:
    """For each pair of methods, `key`'s difference over the seeds both ran (the same data order
    per seed, so paired): mean, its standard error, and whether the sign is supported: every
    seed agrees and the mean is more than two standard errors from zero. One seed: unsupported."""
    by_method: dict[str, dict[int, float]] = {}
    for r in records:
        if "error" not in r and r["method"] in methods and r.get(key) is not None:
            by_method.setdefault(r["method"], {})[r["seed"]] = r[key]
    out = []
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            seeds = sorted(set(by_method.get(a, {})) & set(by_method.get(b, {})))
            diffs = [by_method[a][s] - by_method[b][s] for s in seeds]
            mean = statistics.fmean(diffs) if diffs else None
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
            same_sign = bool(diffs) and (all(d > 0 for d in diffs) or all(d < 0 for d in diffs))
            supported = se is not None and same_sign and abs(mean) > 2 * se
            out.append(
                {"a": a, "b": b, "key": key, "seeds": len(seeds), "mean": mean, "se": se}
                | {"supported": supported}
            )
    return out


def ranking_table(records: list[dict], key: str, methods: list[str]):
    """`paired_differences` as a DataFrame whose last column says, in words, what may be said."""
    import pandas as pd

    rows = []
    for d in paired_differences(records, key, methods):
        if d["mean"] is None:
            verdict = "not run on a common seed"
        elif not d["supported"]:
            verdict = "no ranking: the seeds disagree or the gap is within 2 s.e."
        else:
            verdict = f"{d['a'] if d['mean'] > 0 else d['b']} higher on every seed"
        rows.append(
            {
                "pair": f"{d['a']} − {d['b']}",
                "seeds": d["seeds"],
                f"{key} difference": d["mean"],
                "s.e.": d["se"],
                "what the seeds support": verdict,
            }
        )
    return pd.DataFrame(rows).set_index("pair")


def pareto_front(
    summary: list[dict],
    x: str = "domain_accuracy_after",
    y: str = "retention",
    higher: tuple[bool, bool] = (True, True),
) -> list[str]:
    """Methods that no other method beats on both means: the choices worth considering when
    one cares about `x` and `y`. `higher` says, per axis, whether more is better (memory: no)."""
    sign = [1 if h else -1 for h in higher]
    points = {
        r["method"]: (sign[0] * r[x]["mean"], sign[1] * r[y]["mean"])
        for r in summary
        if r["seeds"] and r[x]["mean"] is not None and r[y]["mean"] is not None
    }

    def beaten(m: str) -> bool:
        px, py = points[m]
        return any(
            qx >= px and qy >= py and (qx, qy) != (px, py)
            for other, (qx, qy) in points.items()
            if other != m
        )

    return [m for m in points if not beaten(m)]


REPEATED = ("domain_accuracy_after", "retention", "general_ce_after", "sec_per_step")


def side_by_side(live: list[dict], saved: list[dict], keys: tuple[str, ...] = REPEATED):
    """Runs made here beside the committed runs of the same method and seed: learning and
    forgetting should repeat exactly on the same budget (the runs are deterministic on a CPU),
    timings and memory should not."""
    import pandas as pd

    by_key = {(r["method"], r["seed"]): r for r in saved if "error" not in r}
    rows = []
    for run in live:
        if "error" in run:
            continue
        old = by_key.get((run["method"], run["seed"]), {})
        for key in keys:
            rows.append(
                {"method": run["method"], "seed": run["seed"], "measure": key}
                | {"here": run.get(key), "committed": old.get(key)}
            )
    return pd.DataFrame(rows).set_index(["method", "seed", "measure"])


def seed_table(summary: list[dict], keys: tuple[str, ...] = REPEATED):
    """The methods that ran several seeds: each number as mean ± standard deviation, and the
    range of domain accuracy (one held-out question moves it by 1/n)."""
    import pandas as pd

    rows = []
    for row in summary:
        if row["seeds"] < 2:
            continue
        out = {"method": row["method"], "seeds": row["seeds"]}
        for key in keys:
            out[key] = f"{row[key]['mean']:.3f} ± {row[key]['std']:.3f}"
        acc = row["domain_accuracy_after"]
        out["domain accuracy range"] = f"{acc['min']:.3f}–{acc['max']:.3f}"
        rows.append(out)
    return pd.DataFrame(
        rows, columns=["method", "seeds", *keys, "domain accuracy range"]
    ).set_index("method")


def with_fresh_memory(summary: list[dict], memory_runs: list[dict], batch: int = 8) -> list[dict]:
    """Summary rows with `training_memory_bytes`: the loaded model plus what training added,
    measured for each method in a fresh process (`benchmarks/memory_estimate.py`). A comparison's
    own peak is its process's, which also holds what earlier runs in that process left."""
    fresh = {
        r["method"]: r["model_bytes"] + r["measured"]
        for r in memory_runs
        if "error" not in r and r["batch"] == batch
    }
    return [
        row
        | {
            "training_memory_bytes": spread(
                [fresh[row["method"]]] if row["method"] in fresh else []
            )
        }
        for row in summary
    ]
