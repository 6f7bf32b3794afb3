"""Speed benchmarks of tutorial_lib on this machine, in one run.

    python benchmarks/run.py [--quick] [--notebooks] --json PATH [--only NAME,...]

Every key, convention and target is explained in benchmarks/README.md. The numbers mean something
only on a quiet machine: the load average at start and end is recorded beside them.

This file is the entry point (settings, the measurement registry, the run, the summary); the
measurements live beside it in training.py and probe_bench.py, their shared helpers in timing.py.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from probe_bench import measure_lm_eval, measure_probe
from timing import timed
from training import (
    measure_lora_vs_full,
    measure_matmul,
    measure_mfu,
    measure_trainer,
    packed_examples,
)

from tutorial_lib import data
from tutorial_lib.device import physical_cores, set_threads, versions
from tutorial_lib.methods import apply_method
from tutorial_lib.models import DEFAULT_MODEL, load_base_model

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run; `quick` and `full` run the same code."""

    name: str
    train_steps: int  # optimizer steps per training run (Trainer comparison, MFU)
    trainer_repeats: int  # (ours, ours with the plain loss, Trainer) runs per method, interleaved
    lora_repeats: int  # (full run, LoRA run) pairs per sequence length, interleaved
    probe_items: int | None  # probe items scored (None = all 360)
    warmup_skip: int = 2  # first steps of every training timing left out (allocations, caches)
    batch_size: int = 8  # sequences per optimizer step
    max_length: int = 128  # token limit of the encoded domain chats (the profiles' value)
    pack_length: int = 64  # tokens per packed training example (the chats average 66)
    step_lengths: tuple[int, ...] = (128, 32)  # fixed sequence lengths for LoRA vs full
    eval_batch_size: int = 32  # sequences per forward pass, ours and lm-eval's alike
    matmul_size: int = 2048  # square matmul that stands in for the machine's peak FLOP/s
    matmul_repeats: int = 5  # best of this many timings

    def __post_init__(self) -> None:
        if self.train_steps < self.warmup_skip + 2:
            raise ValueError(
                f"train_steps ({self.train_steps}) must be >= warmup_skip + 2 "
                f"({self.warmup_skip + 2}): the first {self.warmup_skip} steps are not timed and "
                "the last has no end mark"
            )
        for name in ("trainer_repeats", "lora_repeats", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Settings.{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_items is not None and self.probe_items < 1:
            raise ValueError(f"probe_items must be >= 1 or None (all), got {self.probe_items}")


SETTINGS = {
    # a smoke run: every measurement once, tiny sizes, numbers not to be quoted
    "quick": Settings("quick", train_steps=5, trainer_repeats=1, lora_repeats=1, probe_items=40),
    # about 22 minutes on 2 CPU cores (the notebooks add about 10)
    "full": Settings("full", train_steps=10, trainer_repeats=4, lora_repeats=3, probe_items=None),
}

TARGETS: dict[str, tuple[str, float | bool]] = {
    "trainer_ratio_full": (">=", 1.0),
    "trainer_ratio_lora": (">=", 1.0),
    "mfu_full_fp32": (">=", 0.5),
    "bf16_mean_loss_rel_diff": ("<=", 0.03),
    "lora_over_full_step_time_128": ("<=", 0.8),
    "probe_eval_speedup": (">=", 3.0),
    "lm_eval_time_ratio": ("<=", 1.0),
    "lm_eval_parity": ("==", True),
    "quick_profile_notebooks_seconds": ("<=", 25 * 60),
    "quick_profile_notebooks_passed": ("==", True),
}


# --- shared state ---------------------------------------------------------------------------


@dataclass
class Bench:
    """What the measurements share: settings, the pinned thread count, one base model, results."""

    settings: Settings
    threads: int
    memo: dict[str, Any] = field(default_factory=dict)  # results one measurement hands another
    _base: tuple | None = None

    @property
    def base(self) -> tuple:
        """(model, tokenizer) of the offline base model, loaded once, never trained."""
        if self._base is None:
            self._base = load_base_model(DEFAULT_MODEL)
        return self._base

    @property
    def examples(self) -> list[dict]:
        """The domain chats, encoded once and packed (`training.packed_examples`): what every
        training-loop comparison trains on."""
        if "examples" not in self.memo:
            rows = data.load_domain_train()
            chats = data.encode_chats(self.base[1], rows, self.settings.max_length)
            self.memo["examples"] = packed_examples(chats, self.settings.pack_length)
        return self.memo["examples"]

    def fresh(self, method: str):
        """A copy of the base model with `method` applied, in train mode; the base stays as is."""
        return apply_method(copy.deepcopy(self.base[0]), method).train()

    def settle(self) -> None:
        """Before each timed run: re-pin threads (a library may have changed the count) and free
        the previous run's model and optimizer state (Accelerate's reference cycles hold them)."""
        torch.set_num_threads(self.threads)
        gc.collect()


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
    "probe": measure_probe,
    "lm_eval": measure_lm_eval,
    "notebooks": measure_notebooks,
}


# --- the run ----------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_context(threads: int) -> dict:
    """Where and with what the numbers were measured."""
    import importlib.metadata as md

    try:
        lm_eval_version = md.version("lm_eval")
    except md.PackageNotFoundError:
        lm_eval_version = "not installed"
    return {
        "cpu_model": cpu_model(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        **versions(),
        "lm_eval": lm_eval_version,
        "load_average_at_start": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run(selected: list[str], bench: Bench, json_path: Path) -> dict:
    """Run the selected measurements in order, writing the JSON after each (a crash keeps what
    was measured); a failing measurement is recorded and the others still run."""
    report: dict[str, Any] = {
        "context": machine_context(bench.threads),
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
    parser.add_argument("--notebooks", action="store_true", help="also time the notebooks")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASUREMENTS)}")
    parser.add_argument("--threads", type=int, help="torch threads (default: physical cores)")
    parser.add_argument("--steps", type=int, help="override the training runs' step count")
    parser.add_argument("--items", type=int, help="override the probe item count")
    args = parser.parse_args(argv)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")  # everything is local; never wait on a hub
    bench = Bench(args.settings, threads=set_threads(args.threads))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = run(args.selected, bench, args.json)
    print(summary_table(report))
    for name in report["errors"]:
        print(f"FAILED: {name} (traceback in the JSON under errors.{name})")
    print(f"written to {args.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
