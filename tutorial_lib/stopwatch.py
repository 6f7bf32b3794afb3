"""Where a lesson's time goes: training, evaluation, model loading, kept per process.

The library's slow calls wrap themselves in `timed(category)`. A lesson (or the benchmark that
executes it) reads `totals()`; with $TUTORIAL_TIME_LOG set, every finished block is also appended
to that file as one JSON line, so a notebook run in another process can be accounted for.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

TIME_LOG_ENV = "TUTORIAL_TIME_LOG"
CATEGORIES = ("training", "evaluation", "model_loading")

_totals: dict[str, float] = defaultdict(float)
_depth: dict[str, int] = defaultdict(int)


def add(category: str, seconds: float) -> None:
    """Count `seconds` against `category` (e.g. a training loop's own timing, hooks left out)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown time category {category!r}; allowed: {', '.join(CATEGORIES)}")
    _totals[category] += seconds
    path = os.environ.get(TIME_LOG_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"category": category, "seconds": seconds}) + "\n")


@contextmanager
def timed(category: str) -> Iterator[None]:
    """Time a block; a block nested in one of the same category is not counted twice."""
    _depth[category] += 1
    start = time.perf_counter()
    try:
        yield
    finally:
        _depth[category] -= 1
        if _depth[category] == 0:
            add(category, time.perf_counter() - start)


def totals() -> dict[str, float]:
    """Seconds spent so far in this process, per category."""
    return {c: _totals[c] for c in CATEGORIES}


def reset() -> None:
    """Start counting from zero (e.g. at the top of a lesson)."""
    _totals.clear()


def read_log(path: str | os.PathLike) -> dict[str, float]:
    """Sum a $TUTORIAL_TIME_LOG file per category (missing file: all zero)."""
    sums = {c: 0.0 for c in CATEGORIES}
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return sums
    for line in lines:
        if line.strip():
            row = json.loads(line)
            sums[row["category"]] += row["seconds"]
    return sums
