"""Speed benchmarks of tutorial_lib on this machine, in one run.

    python benchmarks/run.py [--quick] [--notebooks] --json PATH [--only NAME,...]
    python benchmarks/run.py --lessons [--profile quick] [--notebooks 00,02] [--inplace] --json PATH

Every key, convention and target is explained in benchmarks/README.md. The numbers mean something
only on a quiet machine: the load average at start and end is recorded beside them.

This file is the entry point (settings, the measurement registry, the run, the summary); the
measurements live beside it in training.py and probe_bench.py, the types and data they share
in common.py, their timing helpers in timing.py; lessons.py times the lesson notebooks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from common import Bench, Settings
from lessons import find_notebooks, lessons_table, run_lessons
from probe_bench import measure_lm_eval, measure_probe
from timing import timed
from training import (
    measure_lora_scratch_vs_peft,
    measure_lora_vs_full,
    measure_matmul,
    measure_mfu,
    measure_trainer,
)

from tutorial_lib.device import set_threads
from tutorial_lib.provenance import command_line, record

ROOT = Path(__file__).resolve().parent.parent


SETTINGS = {
    # a smoke run: every measurement once, tiny sizes, numbers not to be quoted
    "quick": Settings("quick", train_steps=5, trainer_repeats=1, lora_repeats=1, probe_items=40),
    # about 22 minutes on 2 CPU cores before lora_scratch (an estimated 9 more); notebooks about 10
    "full": Settings("full", train_steps=10, trainer_repeats=4, lora_repeats=3, probe_items=None),
}

TARGETS: dict[str, tuple[str, float | bool]] = {
    "trainer_ratio_full": (">=", 1.0),
    "trainer_ratio_lora": (">=", 1.0),
    "mfu_full_fp32": (">=", 0.5),
    "bf16_mean_loss_rel_diff": ("<=", 0.03),
    "lora_over_full_step_time_128": ("<=", 0.8),
    "lora_scratch_over_peft_step_time_128": ("<=", 1.0),  # ours no slower than peft's
    "probe_eval_speedup": (">=", 3.0),
    "lm_eval_time_ratio": ("<=", 1.0),
    "lm_eval_parity": ("==", True),
    "quick_profile_notebooks_seconds": ("<=", 25 * 60),
    "quick_profile_notebooks_passed": ("==", True),
}


# --- notebooks --------------------------------------------------------------------------------


@contextmanager
def without_cached_runs(folder: Path, pattern: str = "*_quick.jsonl"):
    """Set aside the quick-profile sweep results a lesson cached (lesson 02 skips finished
    runs), so the notebooks are timed from nothing, as on a fresh clone; put them back after."""
    with tempfile.TemporaryDirectory() as aside:
        moved = [(f, Path(aside) / f.name) for f in sorted(folder.glob(pattern))]
        for original, kept in moved:
            shutil.move(original, kept)
        try:
            yield
        finally:
            for written in folder.glob(pattern):
                written.unlink()  # this run's own cache
            for original, kept in moved:
                shutil.move(kept, original)


def measure_notebooks(bench: Bench) -> dict:
    """Wall time of every notebook under nbval in the quick profile, as CI runs them."""
    env = {**os.environ, "TUTORIAL_PROFILE": "quick", "TUTORIAL_THREADS": str(bench.threads)}
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "notebooks/"]
    with without_cached_runs(ROOT / "notebooks" / "runs"):
        proc, seconds = timed(subprocess.run, cmd, cwd=ROOT, env=env)
    return {
        "quick_profile_notebooks_seconds": seconds,
        "quick_profile_notebooks_passed": proc.returncode == 0,  # a failed run's time means little
        "detail": {"returncode": proc.returncode},
    }


MEASUREMENTS: dict[str, Callable[[Bench], dict]] = {
    "matmul": measure_matmul,
    "trainer": measure_trainer,
    "mfu": measure_mfu,
    "lora_vs_full": measure_lora_vs_full,
    "lora_scratch": measure_lora_scratch_vs_peft,
    "probe": measure_probe,
    "lm_eval": measure_lm_eval,
    "notebooks": measure_notebooks,
}


# --- the run ----------------------------------------------------------------------------------


def how_it_ran(threads: int, sizes: dict) -> dict:
    """The provenance record every result carries (`tutorial_lib.provenance`), with lm-eval's
    version beside the others."""
    import importlib.metadata as md

    try:
        lm_eval_version = md.version("lm_eval")
    except md.PackageNotFoundError:
        lm_eval_version = "not installed"
    command = command_line("python benchmarks/run.py")
    return record(command, sizes, threads, {"lm_eval": lm_eval_version}).to_json()


def load_context() -> dict:
    """The load average at the start (and, rewritten after each step, at the end): a load above
    the thread count means the numbers are not to be quoted."""
    return {"load_average_at_start": os.getloadavg()}


def run(selected: list[str], bench: Bench, json_path: Path) -> dict:
    """Run the selected measurements in order, writing the JSON after each (a crash keeps what
    was measured); a failing measurement is recorded and the others still run."""
    report: dict[str, Any] = {
        "ran": how_it_ran(bench.threads, asdict(bench.settings)),
        "context": load_context(),
        "settings": asdict(bench.settings),
        "detail": {},
        "skipped": {},
        "errors": {},
    }
    for name in selected:
        print(f"== {name}", flush=True)
        bench.settle()
        start = time.perf_counter()
        try:
            found = MEASUREMENTS[name](bench)
        except Exception:  # one failure must not lose a 15-minute run
            traceback.print_exc()
            report["errors"][name] = traceback.format_exc(limit=3)
            found = {}
        if "skipped" in found:
            report["skipped"][name] = found.pop("skipped")
            print(f"   skipped: {report['skipped'][name]}")
        report["detail"][name] = {**found.pop("detail", {}), "seconds": time.perf_counter() - start}
        report.update(found)
        if torch.get_num_threads() != bench.threads:
            report["detail"][name]["threads_changed_to"] = torch.get_num_threads()
        report["context"]["load_average_at_end"] = os.getloadavg()
        json_path.write_text(json.dumps(report, indent=1, default=str))
    return report


def summary_table(report: dict) -> str:
    """The headline keys, their targets and whether they are met, as aligned text."""
    rows = []
    for key, value in report.items():
        if isinstance(value, (bool, int, float)):
            target = TARGETS.get(key)
            met = ""
            if target:
                op, goal = target
                ok = {">=": value >= goal, "<=": value <= goal, "==": value == goal}[op]
                met = "yes" if ok else "NO"
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append((key, shown, f"{target[0]} {target[1]}" if target else "", met))
    width = max((len(r[0]) for r in rows), default=10)
    lines = [f"{'key':<{width}}  {'value':>10}  {'target':<10}  met"]
    lines += [f"{k:<{width}}  {v:>10}  {t:<10}  {m}" for k, v, t, m in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--notebooks",
        nargs="?",
        const="all",
        help="also time the notebooks under nbval; with --lessons, which ones (e.g. 00,02)",
    )
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--threads", type=int, help="torch threads (default: physical cores)")
    parser.add_argument("--steps", type=int, help="override the training runs' step count")
    parser.add_argument("--items", type=int, help="override the probe item count")
    parser.add_argument("--lessons", action="store_true", help="time each lesson notebook instead")
    parser.add_argument("--profile", choices=("full", "quick"), help="--lessons: default full")
    parser.add_argument("--inplace", action="store_true", help="--lessons: save executed notebooks")
    parser.add_argument(
        "--notebook-dir", type=Path, default=ROOT / "notebooks", help="--lessons: where they are"
    )
    args = parser.parse_args(argv)
    if args.lessons:
        return lesson_args(parser, args)
    if args.profile or args.inplace or (args.notebooks not in (None, "all")):
        parser.error("--profile, --inplace and a notebook list (--notebooks 00,02) need --lessons")
    names = args.only.split(",") if args.only else [m for m in MEASUREMENTS if m != "notebooks"]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement(s) {unknown}; allowed: {', '.join(MEASUREMENTS)}")
    if args.notebooks and "notebooks" not in names:
        names.append("notebooks")
    args.selected = [m for m in MEASUREMENTS if m in names]  # dependency order
    args.settings = SETTINGS["quick" if args.quick else "full"]
    try:
        if args.steps:
            args.settings = replace(args.settings, train_steps=args.steps)
        if args.items:
            args.settings = replace(args.settings, probe_items=args.items)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def lesson_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """--lessons runs the notebooks only: the measurements' options do not apply."""
    if args.quick or args.only or args.steps or args.items:
        parser.error("--lessons times the notebooks only: drop --quick/--only/--steps/--items")
    args.profile = args.profile or "full"
    picked = None if args.notebooks in (None, "all") else args.notebooks.split(",")
    try:
        args.lesson_paths = find_notebooks(args.notebook_dir.resolve(), picked)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.lesson_paths:
        parser.error(f"no notebooks [0-9][0-9]*_*.ipynb in {args.notebook_dir}")
    return args


def main_lessons(args: argparse.Namespace, threads: int) -> int:
    """`--lessons`: every picked notebook top to bottom, one fresh kernel each."""
    sizes = {"profile": args.profile, "inplace": args.inplace}
    ran = how_it_ran(threads, sizes)
    report = run_lessons(args.lesson_paths, args.profile, threads, args.json, ran, args.inplace)
    print(lessons_table(report))
    for name in report["errors"]:
        print(f"FAILED: {name} (traceback in the JSON under errors.{name})")
    print(f"written to {args.json}")
    return 1 if report["errors"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")  # everything is local; never wait on a hub
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.lessons:
        return main_lessons(args, set_threads(args.threads))
    bench = Bench(args.settings, threads=set_threads(args.threads))
    report = run(args.selected, bench, args.json)
    print(summary_table(report))
    for name in report["errors"]:
        print(f"FAILED: {name} (traceback in the JSON under errors.{name})")
    print(f"written to {args.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
