"""Timing helpers every benchmark module shares: a timed call, a GPU sync, a spread of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and count: the spread to quote beside a repeated number."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings mean something off the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """The call's result and its wall-clock seconds."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
