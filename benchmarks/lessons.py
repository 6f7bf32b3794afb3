"""How long each lesson notebook takes, top to bottom, and where the time goes.

Part of benchmarks/run.py (`--lessons`, the entry point); the keys are in benchmarks/README.md.
Every notebook runs in a fresh kernel (nbclient), one at a time, with the lessons' sweep caches
set aside, and `$TUTORIAL_TIME_LOG` pointing at a fresh file, which `tutorial_lib.stopwatch`
fills with the seconds spent training, evaluating and loading models.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tutorial_lib.config import lesson_number
from tutorial_lib.memory.measure import PEAK_LOG_ENV
from tutorial_lib.stopwatch import CATEGORIES, TIME_LOG_ENV, read_log

CELL_TIMEOUT = 3600  # seconds; generous: a cell this slow misses every lesson's target anyway
TARGETS = {  # seconds per lesson, top to bottom, on 2 CPU cores
    # 00 and 01's older 3- and 12-minute targets are lifted: recall, the control and the published
    # suite made every full evaluation dearer (issue 27, item 7)
    "full": {"02": 2100},
    "quick": {},
}
DEFAULT_TARGET = {"full": 1200, "quick": 150}  # every lesson not named above


def target_seconds(path: Path, profile: str) -> float:
    return TARGETS[profile].get(lesson_number(path), DEFAULT_TARGET[profile])


def find_notebooks(folder: Path, picked: list[str] | None = None) -> list[Path]:
    """The lesson notebooks in `folder`, in order; `picked` ("00", "05b") keeps only those."""
    found = sorted(folder.glob("[0-9][0-9]*_*.ipynb"))
    if picked is None:
        return found
    unknown = sorted(set(picked) - {lesson_number(p) for p in found})
    if unknown:
        known = ", ".join(lesson_number(p) for p in found)
        raise ValueError(f"no lesson notebook {unknown} in {folder}; there are: {known}")
    return [p for p in found if lesson_number(p) in picked]


@contextmanager
def set_aside(folder: Path, keep_in: Path | None = None) -> Iterator[None]:
    """Move a cache folder out of the way for the duration, so every lesson computes its sweeps
    as on a fresh clone; afterwards move what the run wrote there to `keep_in` (its sweep
    results, e.g. for benchmarks/learning_rates.py) or drop it, and put the original back (on an
    error or Ctrl-C too)."""
    with tempfile.TemporaryDirectory() as aside:
        kept = Path(aside) / folder.name
        existed = folder.exists()
        if existed:
            shutil.move(folder, kept)
        try:
            yield
        finally:
            if keep_in is not None and folder.exists():
                shutil.move(folder, keep_in / folder.name)
            shutil.rmtree(folder, ignore_errors=True)  # this run's own cache
            if existed:
                shutil.move(kept, folder)


def breakdown(lesson_seconds: float, log: Path) -> dict[str, float]:
    """Seconds per stopwatch category, and the rest of the lesson's wall time as `other`."""
    spent = read_log(log)
    parts = {f"{c}_seconds": spent[c] for c in CATEGORIES}
    return {
        "lesson_seconds": lesson_seconds,
        **parts,
        "other_seconds": lesson_seconds - sum(parts.values()),
    }


def children_peak_rss_mib(parent: int) -> float:
    """Largest peak resident memory (VmHWM) among the direct children of `parent`, in MiB: the
    kernel's high-water mark, which is what a container's memory limit is checked against."""
    peak = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:  # the process ended while being read
            continue
        if int(fields.get("PPid", "0").strip()) == parent and "VmHWM" in fields:
            peak = max(peak, int(fields["VmHWM"].split()[0]) / 1024)  # kB -> MiB
    return peak


def sample_peak(seen: dict[str, float]) -> None:
    """Raise `seen`'s peak to the kernels' high-water mark now."""
    seen["peak_rss_mib"] = max(seen["peak_rss_mib"], children_peak_rss_mib(os.getpid()))


@contextmanager
def kernel_peak_watch(every: float = 0.5) -> Iterator[dict[str, float]]:
    """Poll the kernels' VmHWM while a notebook runs (Linux only; 0 elsewhere). The high-water
    mark only rises, so the last reading before the kernel exits is its peak; `execute` also
    reads it after every cell (`sample_peak`), so a kernel that lives less than `every` (or a
    poller the scheduler delays) is still read while it is alive."""
    seen = {"peak_rss_mib": 0.0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every):
            sample_peak(seen)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()


def execute(
    path: Path, env: dict[str, str], write_to: Path, after_cell=None
) -> tuple[float, str | None]:
    """Run a notebook top to bottom in a fresh kernel, its folder as the working directory;
    return its wall seconds and the error (None if every cell ran), and save the result.
    `after_cell()` is called after each cell, while the kernel is alive."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_executed=(lambda **_: after_cell()) if after_cell else None,
    )
    start, error = time.perf_counter(), None
    try:
        client.execute(env=env)
    except Exception:  # a failing cell: keep its traceback, time what ran, go on
        error = traceback.format_exc(limit=2)[-4000:]
    seconds = time.perf_counter() - start
    nbformat.write(nb, write_to)
    return seconds, error


def erased_peaks_mib(log: Path) -> float:
    """The largest peak the kernel logged before resetting its high-water mark (the library's
    per-run measurement resets it, `PEAK_LOG_ENV`), in MiB; 0 if it never reset."""
    if not log.exists():
        return 0.0
    return max((int(line) / 2**20 for line in log.read_text().split()), default=0.0)


def time_lesson(path: Path, profile: str, threads: int, write_to: Path, log: Path) -> dict:
    """One lesson's record: seconds per category, its target, whether it was met, and the
    kernel's peak resident memory: its high-water mark, read while it runs and after each cell,
    and every mark the library erased on the way (so a reset never hides a peak)."""
    peaks = log.with_suffix(".peaks")
    for stale in (log, peaks):
        stale.unlink(missing_ok=True)
    env = {
        **os.environ,
        "TUTORIAL_PROFILE": profile,
        "TUTORIAL_THREADS": str(threads),
        TIME_LOG_ENV: str(log),
        PEAK_LOG_ENV: str(peaks),
    }
    with kernel_peak_watch() as memory:
        seconds, error = execute(path, env, write_to, after_cell=lambda: sample_peak(memory))
    memory["peak_rss_mib"] = max(memory["peak_rss_mib"], erased_peaks_mib(peaks))
    peaks.unlink(missing_ok=True)
    target = target_seconds(path, profile)
    return {
        **breakdown(seconds, log),
        "kernel_peak_rss_mib": round(memory["peak_rss_mib"], 1),
        "profile": profile,
        "target_seconds": target,
        "met": error is None and seconds <= target,
        "error": error,
        "executed_notebook": f"temporary copy {write_to.name}",  # no machine paths in results
    }


def run_lessons(
    paths: list[Path],
    profile: str,
    threads: int,
    json_path: Path,
    ran: dict[str, Any],
    inplace: bool = False,
) -> dict:
    """Time every notebook in order, writing the JSON after each (an interrupted run keeps what
    it timed). Executed notebooks go to a temporary folder, or back in place with `inplace`
    (only when every cell ran: a failed run never overwrites a committed lesson). `ran` is the
    run's provenance record (`tutorial_lib.provenance`)."""
    out_dir = Path(tempfile.mkdtemp(prefix="lessons-"))
    report: dict[str, Any] = {
        "ran": ran,
        "context": {"load_average_at_start": os.getloadavg()},
        "settings": {"profile": profile, "inplace": inplace},
        "lessons": {},
        "errors": {},
    }
    save(report, json_path)
    print(f"executed notebooks, time logs and the runs' sweep results go to {out_dir}", flush=True)
    with ExitStack() as stack:
        for folder in sorted({p.parent for p in paths}):
            stack.enter_context(set_aside(folder / "runs", keep_in=out_dir))
        for path in paths:
            try:
                row = time_one(path, profile, threads, out_dir, inplace)
            except KeyboardInterrupt:
                report["interrupted"] = path.stem
                save(report, json_path)
                raise
            report["lessons"][path.stem] = row
            if row["error"]:
                report["errors"][path.stem] = row["error"]
            save(report, json_path)
    return report


def merge_into(committed: dict, report: dict) -> list[str]:
    """Put a run's lessons that ran without error into the committed results, each with the
    load and provenance of the run that measured it (`context_by_lesson`); returns their names.
    Lessons the run did not time keep their earlier rows."""
    ran = dict(report.get("ran") or {})
    if isinstance(ran.get("command"), str):  # a path on the measuring machine: its name only
        ran["command"] = " ".join(
            Path(a).name if a.startswith("/") else a for a in ran["command"].split()
        )
    context = {**report.get("context", {}), "ran": ran}
    merged = []
    for name, row in report["lessons"].items():
        if row.get("error"):
            continue
        committed.setdefault("lessons", {})[name] = row
        committed.setdefault("context_by_lesson", {})[name] = context
        committed.setdefault("errors", {}).pop(name, None)
        merged.append(name)
    return merged


def save(report: dict, json_path: Path) -> None:
    """Rewrite the JSON with the load average now: after every lesson, so none is lost."""
    report["context"]["load_average_at_end"] = os.getloadavg()
    json_path.write_text(json.dumps(report, indent=1, default=str))


def time_one(path: Path, profile: str, threads: int, out_dir: Path, inplace: bool) -> dict:
    """Time one lesson into `out_dir`; with `inplace`, copy it back only if every cell ran."""
    print(f"== {path.name} ({profile})", flush=True)
    log = out_dir / f"{path.stem}.time.jsonl"
    row = time_lesson(path, profile, threads, out_dir / path.name, log)
    if inplace and row["error"] is None:
        shutil.copyfile(out_dir / path.name, path)
        row["executed_notebook"] = f"{path.parent.name}/{path.name}"
    return row


def lessons_table(report: dict) -> str:
    """Seconds per lesson and category beside the target, as aligned text."""
    cols = ("lesson", "training", "evaluation", "model_loading", "other")
    lines = [f"{'notebook':<34}" + "".join(f"{c:>14}" for c in cols) + f"{'target':>8}  met"]
    for name, row in report["lessons"].items():
        values = "".join(f"{row[f'{c}_seconds']:>14.1f}" for c in cols)
        met = "yes" if row["met"] else ("ERROR" if row["error"] else "NO")
        lines.append(f"{name:<34}{values}{row['target_seconds']:>8.0f}  {met}")
    return "\n".join(lines)
