"""Every method on one budget: the same data, seed and steps, each at its own learning rate.

A comparison is a sweep (`sweeps.run_sweep`) of `experiment.summarised_run` over methods and
seeds on one `baseline.Baseline`, so each finished run is cached in a JSONL file and an
interrupted comparison resumes. A method that raises is recorded with its error and the others
still run; one that cannot apply to the model is reported as such. Methods are then compared
at their end, and at matched domain accuracy (lesson 02): what each had forgotten by the time it
had learned as much as the target.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tutorial_lib import experiment
from tutorial_lib.baseline import Baseline
from tutorial_lib.config import Profile
from tutorial_lib.data import TASKS, check_task
from tutorial_lib.experiment import NotApplicable
from tutorial_lib.floor import floor_markdown
from tutorial_lib.methods import REGISTRY, get_method
from tutorial_lib.results import (  # those in __all__ too: lesson 07 reads them as compare.*
    auto_target,
    committed,
    paired_differences,
    pareto_front,
    ranking_table,
    same_budget,
    seed_table,
    side_by_side,
    spread,
    with_fresh_memory,
    with_matched,
)
from tutorial_lib.sweeps import run_sweep

__all__ = [  # with the reading of runs (`results`) that lesson 07 calls through this module
    "REGISTRY",
    "Comparison",
    "ComparisonSpec",
    "committed",
    "compare",
    "of_json",
    "paired_differences",
    "pareto_front",
    "ranking_table",
    "same_budget",
    "seed_table",
    "side_by_side",
    "with_fresh_memory",
]

SUMMARISED = (  # per method over seeds: mean and spread
    "domain_recall_after",
    "domain_accuracy_after",
    "domain_gain",
    "forgetting",
    "retention",
    "general_ce_after",
    "general_ce_change",
    "kl_to_base",
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
    floors: bool = False  # also one noise-floor control per method (seed 0, on general text)
    floor_steps: int | None = None  # the floors' steps; None = the runs' (floor.FLOOR_STEPS_RULE)

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
        if self.floor_steps is not None:
            if not isinstance(self.floor_steps, int) or self.floor_steps <= 0:
                raise ValueError(
                    f"floor_steps must be a positive integer, got {self.floor_steps!r}"
                )
            if not self.floors:
                raise ValueError("floor_steps sets the noise floors' steps: give floors=True too")
            if self.steps is not None and self.floor_steps > self.steps:
                raise ValueError(
                    f"floor_steps ({self.floor_steps}) is more than the runs' steps ({self.steps})"
                )
        check_task(self.task)
        object.__setattr__(self, "methods", methods)

    def lr(self, method: str) -> float:
        """The method's learning rate here: the one given, else its registered default."""
        return self.lrs.get(method, get_method(method).default_lr)

    def seeds_of(self, method: str) -> int:
        """How many seeds the method runs: its own count, else the comparison's."""
        return self.seeds_for.get(method, self.seeds)

    def runs(self, profile: Profile) -> list[dict]:
        """One JSON config per method and seed (the sweep cache adds where they run)."""
        steps = self.steps or profile.train_steps
        asked = self.eval_at if self.eval_at is not None else (steps // 2,)
        eval_at = sorted(step for step in set(asked) if 0 < step < steps)
        runs = [
            {"method": m, "seed": s, "lr": self.lr(m), "steps": steps, "eval_at": eval_at}
            for s in range(max(self.seeds, *self.seeds_for.values(), 1))
            for m in self.methods
            if s < self.seeds_of(m)
        ]
        floor_steps = min(self.floor_steps or steps, steps)
        floors = [  # `train_on` only here: the runs' cache keys stay as they were
            {"method": m, "seed": 0, "lr": self.lr(m), "steps": floor_steps, "eval_at": []}
            | {"train_on": "general"}
            for m in self.methods
        ]
        if not self.floors:
            return runs
        # seed 0 of every method, then the floors, then the other seeds: a comparison stopped
        # part-way has each method once, beside its floor
        return [r for r in runs if r["seed"] == 0] + floors + [r for r in runs if r["seed"]]


def compared_baseline(baseline: Baseline | None, spec: ComparisonSpec) -> Baseline:
    """The comparison's baseline (default: this profile's, on the spec's task), with a mid-run
    suite of at most 120 probe items and 16 passages unless it has its own."""
    baseline = baseline or Baseline(task=spec.task)
    if baseline.task != spec.task:
        raise ValueError(f"the baseline asks about {baseline.task}, the spec trains {spec.task}")
    return baseline if baseline.trajectory_suite else baseline.with_trajectory(120, 16)


def error_record(method: str, seed: int, lr: float, exc: BaseException) -> dict:
    """The record of a run that raised: what was asked, and the error's type and message."""
    error = {"type": type(exc).__name__, "message": str(exc)}
    return {"method": method, "seed": seed, "lr": lr, "error": error}


def not_applicable(record: dict) -> bool:
    """Whether a record is of a method that cannot apply to the model (not a failure)."""
    return record.get("error", {}).get("type") == NotApplicable.__name__


def run_one(
    baseline: Baseline,
    method: str,
    seed: int,
    lr: float,
    steps: int,
    eval_at: list[int],
    on_run: Callable[[str, int], None] | None = None,
    train_on: str = "domain",
) -> dict:
    """One method's run as a record; an exception becomes its error, Ctrl-C stops the sweep.
    `train_on="general"` runs its noise floor (`floor`)."""
    baseline.measure()  # a base that cannot be measured stops everything
    if on_run is not None:
        on_run(method if train_on == "domain" else f"{method} noise floor", seed)
    spec = {"method": method, "seed": seed, "lr": lr, "steps": steps, "eval_at": tuple(eval_at)}
    spec["train_on"] = train_on
    try:
        summary = experiment.summarised_run(baseline, label=method, group="compare", **spec)
    except Exception as exc:  # recorded (a method that does not apply, too); the others run
        return {**error_record(method, seed, lr, exc), "train_on": train_on}
    if summary["interrupted"]:
        raise KeyboardInterrupt  # a part-trained run is not a result: it reruns on resume
    gain = summary["domain_accuracy_after"] - summary["domain_accuracy_before"]
    # the load beside the step time: a busy machine's seconds are not this method's
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        **summary,
        "family": get_method(method).family,
        "domain_gain": gain,
        "load_average": load,
    }


def drop_failed(path: Path) -> int:
    """Remove failed runs from a results file, so that a resumed comparison retries them (not
    methods that do not apply: they would not apply again)."""
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    results = [json.loads(line)["result"] for line in lines]
    kept = [ln for ln, r in zip(lines, results) if "error" not in r or not_applicable(r)]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)  # never a half-written results file
    return len(lines) - len(kept)


def compare(
    spec: ComparisonSpec | None = None,
    *,
    results_path: str | Path,
    baseline: Baseline | None = None,
    retry_failed: bool = False,
    on_run: Callable[[str, int], None] | None = None,
    **spec_fields,
) -> Comparison:
    """Run every method of `spec` (or its fields as keywords) on one budget, caching each run
    in `results_path` (JSONL; delete it to start over), and compare them.

    `baseline` says where they run (profile, model, suite; default: $TUTORIAL_PROFILE's on the
    spec's task); `retry_failed` reruns methods that raised last time; `on_run(method, seed)`
    is called before each run that is not cached (e.g. to print progress).
    """
    if spec is not None and spec_fields:
        raise TypeError(f"give the comparison's knobs in the spec, not as {sorted(spec_fields)}")
    spec = spec or ComparisonSpec(**spec_fields)
    baseline = compared_baseline(baseline, spec)
    path = Path(results_path)
    if retry_failed:
        drop_failed(path)
    run = partial(run_one, baseline, on_run=on_run)
    records = run_sweep(spec.runs(baseline.profile), run, path, where=baseline.identity())
    floors = [r for r in records if is_floor(r)]
    return Comparison.of([r for r in records if not is_floor(r)], spec.target, floors)


def is_floor(record: dict) -> bool:
    """Whether a record is a noise-floor control run (records before floors existed are not)."""
    return record.get("train_on", "domain") == "general"


# --- reading a comparison ----------------------------------------------------------------------


def summarise(records: list[dict]) -> list[dict]:
    """One row per method, in the order first run: mean and spread over its seeds."""
    rows: dict[str, dict] = {}
    for record in records:
        row = rows.setdefault(record["method"], {"method": record["method"], "runs": []})
        row["runs"].append(record)
    out = []
    for method, row in rows.items():
        done = [r for r in row["runs"] if "error" not in r]
        errors = [r["error"] for r in row["runs"] if "error" in r and not not_applicable(r)]
        refused = [r["error"]["message"] for r in row["runs"] if not_applicable(r)]
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
                "not_applicable": refused[0] if refused else None,
                **numbers,
            }
        )
    return out


@dataclass
class Comparison:
    """Records (one per method and seed; a failed one carries "error") and what they show."""

    records: list[dict]
    target: float | None  # the domain accuracy the matched numbers are read at
    floors: list[dict] = field(default_factory=list)  # noise-floor control runs (`floor`)

    @classmethod
    def of(
        cls, records: list[dict], target: float | None = None, floors: list[dict] = ()
    ) -> Comparison:
        """Add each record's numbers at matched accuracy (auto target unless one is given)."""
        target = target if target is not None else auto_target(records)
        return cls([with_matched(r, target) for r in records], target, list(floors))

    @property
    def failed(self) -> list[dict]:
        """Runs that raised, floors included (not methods that cannot apply to the model)."""
        return [r for r in self.records + self.floors if "error" in r and not not_applicable(r)]

    @property
    def not_applicable(self) -> list[dict]:
        """Runs of methods that cannot apply to the model, with the reason as their message."""
        return [r for r in self.records if not_applicable(r)]

    def summary(self) -> list[dict]:
        return summarise(self.records)

    def to_json(self) -> dict:
        """Everything, JSON-able: the target, every record and the per-method summary."""
        out = {"target": self.target, "records": self.records, "summary": self.summary()}
        return out | ({"floors": self.floors} if self.floors else {})

    def table(self):
        """The per-method means as a DataFrame, with a "±" column beside each when seeds vary."""
        import pandas as pd

        target = _pct(self.target)
        rows = []
        for row in self.summary():
            out = {k: row[k] for k in ("method", "family", "lr", "seeds")}
            out["error"] = _problem(row).removeprefix("error: ")
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
        return "\n".join(lines) + "\n" + (floor_markdown(self.floors) if self.floors else "")


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


def _one_line(text: str) -> str:
    """Text as one table-safe line."""
    return text.replace("|", "/").replace("\n", " ")


def _error_text(error: dict) -> str:
    """An error as one table-safe line: "Type: message"."""
    return _one_line(f"{error['type']}: {error['message']}")


def _problem(row: dict) -> str:
    """Why a method has no numbers (or fewer seeds): not applicable, or its first error."""
    if row["not_applicable"]:
        return "not applicable: " + _one_line(row["not_applicable"])
    return f"error: {_error_text(row['errors'][0])}" if row["errors"] else ""


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
        return cells + [_problem(row)] + [""] * (len(TABLE) - 1)
    return cells + [_cell(row[key], scale, decimals) for _, key, scale, decimals in TABLE]


# --- what a comparison supports ----------------------------------------------------------------


def of_json(saved: dict) -> Comparison:
    """A saved comparison (`to_json`) back as a Comparison, at the target it was read at."""
    return Comparison(saved["records"], saved["target"], saved.get("floors", []))
