"""Every method on one budget: the same data, seed and steps, each at its own learning rate.

A comparison is a sweep (`forgetting.run_sweep`) of `experiment.summarised_run` over methods and
seeds, so each finished run is cached in a JSONL file and an interrupted comparison resumes. A
method that raises is recorded with its error and the others still run. Methods are then compared
at their end, and at matched domain accuracy (lesson 02): what each had forgotten by the time it
had learned as much as the target.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from tutorial_lib.config import Profile, get_profile
from tutorial_lib.data import TASKS, check_task
from tutorial_lib.forgetting import at_domain_accuracy, run_sweep
from tutorial_lib.methods import REGISTRY, get_method
from tutorial_lib.models import DEFAULT_MODEL

MATCHED = ("step", "forgetting", "retention", "general_ce")  # read at the target accuracy
SUMMARISED = (  # per method over seeds: mean and spread
    "domain_accuracy_after",
    "domain_gain",
    "forgetting",
    "retention",
    "general_ce_after",
    "forgetting_at_target",
    "retention_at_target",
    "sec_per_step",
    "peak_memory_bytes",
    "trainable_percent",
    "checkpoint_bytes",
)


@dataclass(frozen=True)
class ComparisonSpec:
    """What every method shares (data, seeds, steps) and what each has of its own (its lr)."""

    methods: tuple[str, ...] = ()  # names from the registry; () = every registered method
    seeds: int = 1  # seeds 0 .. seeds-1: each method runs once per seed
    seeds_for: dict[str, int] = field(default_factory=dict)  # per method; missing = `seeds`
    steps: int | None = None  # optimizer steps for every method; None = the profile's
    lrs: dict[str, float] = field(default_factory=dict)  # per method; missing = its default_lr
    task: str = TASKS[0]  # whose support data is trained on and asked about
    eval_at: tuple[int, ...] | None = None  # mid-run points for matched accuracy; None = halfway
    target: float | None = None  # domain accuracy to match; None = halfway from base to best

    def __post_init__(self) -> None:
        methods = tuple(self.methods) or tuple(sorted(REGISTRY))
        for name in (*methods, *self.lrs, *self.seeds_for):
            get_method(name)  # unknown names fail here, listing the known ones
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods are listed more than once: {list(methods)}")
        if not isinstance(self.seeds, int) or self.seeds <= 0:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        bad_seeds = {m: n for m, n in self.seeds_for.items() if not isinstance(n, int) or n <= 0}
        if bad_seeds:
            raise ValueError(f"seeds_for must give positive integers, got {bad_seeds}")
        if set(self.seeds_for) - set(methods):
            extra = sorted(set(self.seeds_for) - set(methods))
            raise ValueError(f"seeds_for names methods that are not compared: {extra}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps <= 0):
            raise ValueError(f"steps must be a positive integer or None, got {self.steps!r}")
        bad = {m: lr for m, lr in self.lrs.items() if not (lr > 0 and math.isfinite(lr))}
        if bad:
            raise ValueError(f"learning rates must be positive numbers, got {bad}")
        if self.target is not None and not 0 < self.target <= 1:
            raise ValueError(f"target must be a domain accuracy in (0, 1], got {self.target}")
        check_task(self.task)
        object.__setattr__(self, "methods", methods)

    def lr(self, method: str) -> float:
        """The method's learning rate here: the one given, else its registered default."""
        return self.lrs.get(method, get_method(method).default_lr)

    def seeds_of(self, method: str) -> int:
        """How many seeds the method runs: its own count, else the comparison's."""
        return self.seeds_for.get(method, self.seeds)

    def runs(self, profile: Profile, model_name: str) -> list[dict]:
        """One JSON config per method and seed; the whole budget is in it, so a cached run is
        reused only for the same steps, data sizes and model."""
        steps = self.steps or profile.train_steps
        asked = self.eval_at if self.eval_at is not None else (steps // 2,)
        eval_at = sorted(step for step in set(asked) if 0 < step < steps)
        where = {"profile": asdict(profile), "model": model_name, "task": self.task}
        return [
            {"method": m, "seed": s, "lr": self.lr(m), "steps": steps, "eval_at": eval_at, **where}
            for s in range(max(self.seeds, *self.seeds_for.values(), 1))
            for m in self.methods
            if s < self.seeds_of(m)
        ]


class SharedBase:
    """What every run of a comparison shares: the suites, and the base model measured once on
    each, on first need (a comparison whose runs are all cached loads no model)."""

    def __init__(self, profile: Profile, model_name: str, task: str, suite=None):
        from tutorial_lib.experiment import Suite

        self.profile, self.model_name = profile, model_name
        self.suite = suite or Suite.from_profile(profile, task)
        probe, general = min(120, len(self.suite.probe)), min(16, len(self.suite.general))
        smaller = (probe, general) != (len(self.suite.probe), len(self.suite.general))
        self.mid_suite = self.suite.subset(probe, general) if smaller else None
        self._measured = None

    def measured(self) -> tuple:
        """(before, before on the mid-run suite or None): the base model's numbers."""
        if self._measured is None:
            from tutorial_lib.experiment import evaluate_base
            from tutorial_lib.models import load_base_model

            model, tokenizer = load_base_model(self.model_name)
            batch = self.profile.eval_batch_size
            before = evaluate_base(model, tokenizer, self.suite, batch)
            mid = self.mid_suite and evaluate_base(model, tokenizer, self.mid_suite, batch)
            self._measured = (before, mid)
        return self._measured


def error_record(method: str, seed: int, lr: float, exc: BaseException) -> dict:
    """The record of a run that raised: what was asked, and the error's type and message."""
    error = {"type": type(exc).__name__, "message": str(exc)}
    return {"method": method, "seed": seed, "lr": lr, "error": error}


def run_one(
    shared: SharedBase,
    method: str,
    seed: int,
    lr: float,
    steps: int,
    eval_at: list[int],
    task: str,
    on_run: Callable[[str, int], None] | None = None,
    **where,
) -> dict:
    """One method's run as a record; an exception becomes its error, Ctrl-C stops the sweep."""
    from tutorial_lib.experiment import summarised_run

    before, mid_before = shared.measured()  # a base that cannot be measured stops everything
    if on_run is not None:
        on_run(method, seed)
    try:
        summary = summarised_run(
            label=method,
            group="compare",
            method=method,
            seed=seed,
            lr=lr,
            steps=steps,
            eval_at=tuple(eval_at),
            task=task,
            profile=shared.profile,
            model_name=shared.model_name,
            suite=shared.suite,
            before=before,
            trajectory_suite=shared.mid_suite,
            trajectory_before=mid_before,
        )
    except Exception as exc:  # recorded; the other methods still run
        return error_record(method, seed, lr, exc)
    if summary["interrupted"]:
        raise KeyboardInterrupt  # a part-trained run is not a result: it reruns on resume
    gain = summary["domain_accuracy_after"] - summary["domain_accuracy_before"]
    return {**summary, "family": get_method(method).family, "domain_gain": gain}


def drop_failed(path: Path) -> int:
    """Remove failed runs from a results file, so that a resumed comparison retries them."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if "error" not in json.loads(line)["result"]]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)  # never a half-written results file
    return len(lines) - len(kept)


def compare(
    spec: ComparisonSpec | None = None,
    *,
    results_path: str | Path,
    profile: Profile | None = None,
    model_name: str = DEFAULT_MODEL,
    suite=None,
    retry_failed: bool = False,
    on_run: Callable[[str, int], None] | None = None,
    **spec_fields,
) -> Comparison:
    """Run every method of `spec` (or its fields as keywords) on one budget, caching each run
    in `results_path` (JSONL; delete it to start over), and compare them.

    `profile` sizes the runs (default: $TUTORIAL_PROFILE); `suite` replaces the profile's
    evaluation items; `retry_failed` reruns methods that raised last time; `on_run(method,
    seed)` is called before each run that is not cached (e.g. to print progress).
    """
    if spec is not None and spec_fields:
        raise TypeError(f"give the comparison's knobs in the spec, not as {sorted(spec_fields)}")
    spec = spec or ComparisonSpec(**spec_fields)
    profile = profile or get_profile()
    path = Path(results_path)
    if retry_failed:
        drop_failed(path)
    shared = SharedBase(profile, model_name, spec.task, suite)
    records = run_sweep(
        spec.runs(profile, model_name), partial(run_one, shared, on_run=on_run), path
    )
    return Comparison.of(records, spec.target)


# --- reading a comparison ----------------------------------------------------------------------


def auto_target(records: list[dict]) -> float | None:
    """Halfway from the base's domain accuracy to the best run's: a level most methods reach,
    so most get a matched number. None when no run learned anything."""
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


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min and max."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = None
    if len(values) > 1:  # statistics.stdev raises on infinities: their spread is undefined
        std = statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


def summarise(records: list[dict]) -> list[dict]:
    """One row per method, in the order first run: mean and spread over its seeds."""
    rows: dict[str, dict] = {}
    for record in records:
        row = rows.setdefault(record["method"], {"method": record["method"], "runs": []})
        row["runs"].append(record)
    out = []
    for method, row in rows.items():
        done = [r for r in row["runs"] if "error" not in r]
        errors = [r["error"] for r in row["runs"] if "error" in r]
        numbers = {
            key: spread([r[key] for r in done if r.get(key) is not None]) for key in SUMMARISED
        }
        out.append(
            {
                "method": method,
                "family": get_method(method).family,
                "lr": row["runs"][0]["lr"],
                "seeds": len(done),
                "errors": errors,
                **numbers,
            }
        )
    return out


@dataclass
class Comparison:
    """Records (one per method and seed; a failed one carries "error") and what they show."""

    records: list[dict]
    target: float | None  # the domain accuracy the matched numbers are read at

    @classmethod
    def of(cls, records: list[dict], target: float | None = None) -> Comparison:
        """Add each record's numbers at matched accuracy (auto target unless one is given)."""
        target = target if target is not None else auto_target(records)
        return cls([with_matched(r, target) for r in records], target)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if "error" in r]

    def summary(self) -> list[dict]:
        return summarise(self.records)

    def to_json(self) -> dict:
        """Everything, JSON-able: the target, every record and the per-method summary."""
        return {"target": self.target, "records": self.records, "summary": self.summary()}

    def table(self):
        """The per-method means as a DataFrame, with a "±" column beside each when seeds vary."""
        import pandas as pd

        target = _pct(self.target)
        rows = []
        for row in self.summary():
            out = {k: row[k] for k in ("method", "family", "lr", "seeds")}
            out["error"] = _error_text(row["errors"][0]) if row["errors"] else ""
            for column, key, scale, _ in TABLE:
                stats, name = row[key], column.replace("{target}", target)
                out[name] = None if stats["mean"] is None else stats["mean"] * scale
                if any(r["seeds"] > 1 for r in self.summary()):
                    out[f"{name} ±"] = None if stats["std"] is None else stats["std"] * scale
            rows.append(out)
        return pd.DataFrame(rows).set_index("method")

    def markdown(self) -> str:
        """The per-method table in Markdown: mean ± standard deviation over seeds."""
        target = _pct(self.target)
        header = ["method", "family", "lr", "seeds"]
        header += [column.replace("{target}", target) for column, *_ in TABLE]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.summary():
            lines.append("| " + " | ".join(_markdown_cells(row)) + " |")
        return "\n".join(lines) + "\n"


TABLE = [  # (column, summary key, scale, decimals)
    ("trainable %", "trainable_percent", 1, 3),
    ("peak memory (MiB)", "peak_memory_bytes", 2**-20, 0),
    ("s/step", "sec_per_step", 1, 2),
    ("domain acc", "domain_accuracy_after", 1, 3),
    ("domain gain", "domain_gain", 1, 3),
    ("forgetting (pts)", "forgetting", 100, 1),
    ("retention", "retention", 1, 3),
    ("general CE", "general_ce_after", 1, 3),
    ("checkpoint (MiB)", "checkpoint_bytes", 2**-20, 2),
    ("retention at {target}", "retention_at_target", 1, 3),
    ("forgetting at {target} (pts)", "forgetting_at_target", 100, 1),
]


def _pct(target: float | None) -> str:
    return "target" if target is None else f"{target:.0%}"


def _error_text(error: dict) -> str:
    """An error as one table-safe line: "Type: message"."""
    return f"{error['type']}: {error['message']}".replace("|", "/").replace("\n", " ")


def _cell(stats: dict, scale: float, decimals: int) -> str:
    """ "mean ± std" (the mean alone for one seed; "–" where there is no number)."""
    if stats["mean"] is None:
        return "–"
    text = f"{stats['mean'] * scale:.{decimals}f}"
    if stats["std"] is None:
        return text
    return f"{text} ± {stats['std'] * scale:.{decimals}f}"


def _markdown_cells(row: dict) -> list[str]:
    """One summary row as Markdown cells; a method with no finished run shows its error."""
    seeds = str(row["seeds"]) + (f" ({len(row['errors'])} failed)" if row["errors"] else "")
    cells = [row["method"], row["family"], f"{row['lr']:g}", seeds]
    if not row["seeds"]:
        return cells + [f"error: {_error_text(row['errors'][0])}"] + [""] * (len(TABLE) - 1)
    return cells + [_cell(row[key], scale, decimals) for _, key, scale, decimals in TABLE]


# --- what a comparison supports ----------------------------------------------------------------

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


def of_json(saved: dict) -> Comparison:
    """A saved comparison (`to_json`) back as a Comparison, at the target it was read at."""
    return Comparison(saved["records"], saved["target"])


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


BUDGET = ("domain_facts", "probe_items", "general_items", "batch_size", "max_length")


def same_budget(saved: dict, profile: Profile, steps: int) -> bool:
    """Whether a saved comparison trained and measured on this budget (data sizes and steps),
    so that its runs can be repeated exactly here."""
    sizes = saved["ran"]["profile"]
    done = [r for r in saved["records"] if "error" not in r]
    return all(sizes[k] == getattr(profile, k) for k in BUDGET) and all(
        r["steps"] == steps for r in done
    )
