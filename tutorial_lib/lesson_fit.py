"""Will this lesson fit here? Each lesson's first cell asks, before anything big is loaded.

A public Binder session has 1-2 GB and kills a process that goes past it; a lesson's kernel
peaks at about 2-7 GiB (measured on 2 cores, committed in benchmarks/results). `check_lesson`
sets the lesson's measured peak against the memory this machine lets the kernel use (the
container's cgroup limit, or $TUTORIAL_MEMORY_LIMIT_MB, or free GPU memory, as the training
preflight reads them) and, where it will not fit, stops "Run all" with a `WontFitError` that
names what does fit: a smaller profile, or a measured short run from the command line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tutorial_lib.config import PROFILE_ENV, PROFILES, get_profile
from tutorial_lib.data import results_dir
from tutorial_lib.memory.machine import (
    LIMIT_ENV,
    WontFitError,
    available_memory,
    container_memory_left,
)
from tutorial_lib.units import MIB, gib

HEADROOM = 0.9  # as the training preflight: leave a tenth for what the measurement missed
ROUTES_FILE = "small-memory.json"
# A public Binder session holds the Jupyter server too, and the first cell keeps a tenth spare:
# a lesson runs in a 2 GB session when its kernel peaks at 1.5 GiB or less.
BINDER_SESSION_MIB = 2048
BINDER_KERNEL_MIB = 1536
BINDER_LESSONS = ("00", "03", "04", "06", "08")  # declared to fit, in quick (measured)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def measured_lessons(profile: str, folder: Path | None = None) -> dict[str, dict]:
    """Each lesson's committed run in one profile (`benchmarks/run.py --lessons`), by notebook
    name; `folder` defaults to `data.results_dir()`."""
    return _read((folder or results_dir()) / f"lessons-{profile}.json").get("lessons", {})


def kernel_peak_bytes(result: dict) -> int | None:
    """A measured lesson's kernel peak in bytes (`kernel_peak_rss_mib`; results written before
    keys named their unit say `kernel_peak_rss_mb`, also MiB), or None if not measured."""
    peak = result.get("kernel_peak_rss_mib") or result.get("kernel_peak_rss_mb")
    return int(peak * MIB) if peak else None


def lesson_peaks(lesson: str) -> dict[str, int]:
    """The lesson's kernel peak in bytes per profile, as measured on 2 cores and committed."""
    peaks = {}
    for profile in PROFILES:
        peak = kernel_peak_bytes(measured_lessons(profile).get(lesson) or {})
        if peak:
            peaks[profile] = peak
    return peaks


def binder_verdict(lesson: str, folder: Path | None = None) -> str:
    """Whether the lesson runs in a 2 GB Binder session, from its committed `quick` peak."""
    peak = kernel_peak_bytes(measured_lessons("quick", folder).get(lesson) or {})
    if peak is None:
        return "not measured"
    if peak <= BINDER_KERNEL_MIB * MIB:
        return f"yes, in `quick` ({gib(peak):.1f} GiB)"
    return f"no: `quick` peaks at {gib(peak):.1f} GiB"


def small_routes() -> list[dict]:
    """Short command-line runs with their measured whole-process peak (benchmarks/small_memory.py)."""
    return [r for r in _read(results_dir() / ROUTES_FILE).get("routes", []) if "error" not in r]


def limit_source(device: torch.device) -> str:
    """Which limit `available_memory` applies, in words a learner can act on."""
    if os.environ.get(LIMIT_ENV):
        return f"{LIMIT_ENV}={os.environ[LIMIT_ENV]}"
    if device.type == "cuda":
        return f"free memory of {torch.cuda.get_device_name(device)}"
    return "the container's memory limit" if container_memory_left() is not None else "free RAM"


def held_now(device: torch.device) -> int:
    """Bytes this process already holds, which the measured peak includes but `free` does not."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    import psutil

    return psutil.Process().memory_info().rss


@dataclass(frozen=True)
class LessonFit:
    """One lesson's measured peaks against the memory this process may still use."""

    lesson: str
    profile: str
    device: str
    free: int  # bytes this process may still use
    held: int  # bytes it already holds
    source: str  # where `free` comes from
    peaks: dict[str, int] = field(default_factory=dict)  # bytes per profile
    routes: list[dict] = field(default_factory=list)

    def fits(self, profile: str | None = None) -> bool | None:
        """Whether the profile's measured peak fits; None where it was never measured."""
        peak = self.peaks.get(profile or self.profile)
        if peak is None:
            return None
        return peak - self.held <= HEADROOM * self.free

    def routes_that_fit(self) -> list[dict]:
        """Command-line runs (fresh processes) whose measured peak fits, the largest first."""
        fitting = [r for r in self.routes if r["peak_rss_mib"] * MIB <= HEADROOM * self.free]
        return sorted(fitting, key=lambda r: -r["peak_rss_mib"])

    def report(self) -> str:
        """What a learner reads in the first cell: the numbers, the verdict, and what to do."""
        room = f"{gib(self.held + self.free):.1f} GiB ({self.source})"
        if self.profile not in self.peaks:
            return (
                f"{self.lesson}: no measured peak committed for the {self.profile} profile, "
                f"so nothing to check; this process may use up to {room}."
            )
        measured = ", ".join(f"{p} {gib(b):.1f} GiB" for p, b in sorted(self.peaks.items()))
        lines = [
            f"{self.lesson}, {self.profile} profile, on {self.device}.",
            f"Measured peak of the whole lesson (kernel memory on 2 CPU cores): {measured}.",
            f"This process may use up to {room}.",
        ]
        if self.device.startswith("cuda"):
            suits = [
                p for p in sorted(self.peaks, key=self.peaks.get, reverse=True) if self.fits(p)
            ]
            lines.append(
                "The CPU peak bounds what this GPU must hold (it includes Python and torch); "
                + (f"the {suits[0]} profile suits it." if suits else "no profile fits it.")
            )
        if self.fits():
            spare = self.held + self.free - self.peaks[self.profile]
            lines.append(f"It fits, with about {gib(spare):.1f} GiB to spare.")
            return "\n".join(lines)
        lines.append(
            "It will NOT fit: run whole, it would run out of memory partway. What fits here instead:"
        )
        smaller = [p for p in self.peaks if p != self.profile and self.fits(p)]
        for p in smaller:
            lines.append(
                f"- the {p} profile (peak {gib(self.peaks[p]):.1f} GiB): run `%env {PROFILE_ENV}={p}` "
                "in a cell, then this cell and the rest again;"
            )
        for r in self.routes_that_fit():
            lines.append(
                f"- in a terminal: `{r['command']}` ({r['steps']} steps, peak "
                f"{gib(r['peak_rss_mib'] * MIB):.1f} GiB measured with the model load);"
            )
        lines.append(
            "- reading the lesson as committed: every output in it is from a full run on 2 CPU cores."
        )
        lines.append("To try anyway, run the cells one at a time: this check stops only Run All.")
        return "\n".join(lines)


def lesson_fit(
    lesson: str, profile: str | None = None, device: torch.device | None = None
) -> LessonFit:
    """Measure the room here and set it beside the lesson's committed peaks."""
    from tutorial_lib.device import get_device

    device = device or get_device()
    return LessonFit(
        lesson=lesson,
        profile=get_profile(profile).name,
        device=str(device),
        free=available_memory(device),
        held=held_now(device),
        source=limit_source(device),
        peaks=lesson_peaks(lesson),
        routes=small_routes(),
    )


class LessonWontFitError(WontFitError):
    """A lesson whose measured peak is beyond this machine's memory: stopped before it starts."""


def check_lesson(
    lesson: str, profile: str | None = None, device: torch.device | None = None
) -> None:
    """Print whether the lesson fits; raise `LessonWontFitError` (stopping Run All) if it does not."""
    fit = lesson_fit(lesson, profile, device)
    if fit.fits() is False:
        raise LessonWontFitError(fit.report())
    print(fit.report())
