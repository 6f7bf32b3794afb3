"""Device, threads and seeds in one place, so no notebook cell pastes its own copy."""

from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch


@lru_cache(maxsize=1)
def get_device() -> torch.device:
    """cuda, then mps, then cpu: the fastest device this machine has."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def physical_cores() -> int:
    """Physical cores; hyper-threads slow matrix work down rather than up."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def set_threads(n: int | None = None) -> int:
    """Set torch's CPU thread count ($TUTORIAL_THREADS or physical cores) and return it."""
    n = n or int(os.environ.get("TUTORIAL_THREADS", "0") or 0) or physical_cores()
    torch.set_num_threads(n)
    return n


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, Arm `Features`); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def fast_bf16(device: torch.device | None = None) -> bool:
    """Whether bf16 autocast should speed training up here, not just run: a GPU that computes
    in bf16, or a CPU with bf16 instructions (x86 AVX512-BF16 or AMX, Arm BF16). Without them,
    torch emulates bf16 on the CPU, which is slower than fp32."""
    device = device or get_device()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch; call before model init and before data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_name() -> str:
    """The CPU's marketing name (Linux), else what platform reports: beside every timing."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of what the lessons depend on, plus the device: the first cell of every lesson."""
    import importlib.metadata as md
    import platform

    info = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "not installed"
    info["device"] = str(get_device())
    info["cpu threads"] = str(torch.get_num_threads())
    return info
