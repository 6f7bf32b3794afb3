"""What the machine allows: free memory, a container's limit, and the check before training."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tutorial_lib.memory.estimator import MemoryEstimate

LIMIT_ENV = "TUTORIAL_MEMORY_LIMIT_MB"


CGROUP_FILES = (  # (limit, usage): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def release_memory(collect: bool = True) -> bool:
    """Collect Python's garbage (with `collect`: about 0.1 s once transformers is loaded), then
    hand freed heap pages back to the OS (glibc's `malloc_trim`, microseconds): a kernel's peak
    is its high-water mark, and pages freed but kept by the allocator count towards the next
    phase's. True where there was an allocator to trim."""
    if collect:
        gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # no glibc (e.g. musl): nothing to trim
        return False
    return True


def hands_memory_back(function):
    """Decorator for the library's evaluation entry points: when `function` returns (or raises),
    the pages it freed go back to the OS (`release_memory`, without a collection). Without it a
    scoring pass's freed activations stay counted in the process's resident set, and the next
    pass's peak stacks on top of them (in a 2 GB Binder session, 0.1-0.2 GiB)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            release_memory(collect=False)

    return wrapper


def container_memory_left() -> int | None:
    """Bytes the container's memory limit still allows (Binder's 1-2 GB sessions set one, and a
    process past it is killed, not warned); None where there is no limit or it cannot be read."""
    import psutil

    for limit_file, usage_file in CGROUP_FILES:
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if not text.isdigit() or int(text) >= psutil.virtual_memory().total:
            return None  # "max", or v1's "unlimited" (a number near 2**63)
        try:
            used = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            used = 0
        return max(0, int(text) - used)
    return None


def available_memory(device: torch.device) -> int:
    """Free memory a run can use: free VRAM on CUDA, else available RAM within the container's
    memory limit, if it has one.

    $TUTORIAL_MEMORY_LIMIT_MB caps it, to rehearse a smaller machine (and to test the preflight).
    """
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
        left = container_memory_left()
        free = free if left is None else min(free, left)
    limit = os.environ.get(LIMIT_ENV)
    return min(free, int(float(limit) * 2**20)) if limit else free


class WontFitError(MemoryError):
    """A run was predicted not to fit; raised before training rather than killed by the OS."""


def preflight(needed: MemoryEstimate, device: torch.device, headroom: float = 0.9) -> None:
    """Stop before a run that is predicted not to fit, with the numbers and what to change.
    `needed`: `estimate(model.config, setup_for(model, ...))` of the run about to start."""
    free = available_memory(device)
    if needed.beyond_weights <= headroom * free:
        return
    raise WontFitError(
        f"this run needs about {needed.beyond_weights / 2**20:,.0f} MiB beyond the loaded weights, "
        f"but only {free / 2**20:,.0f} MiB of {device.type} memory is free.\n{needed}\n"
        "Try a smaller batch_size with grad_accum (activations shrink with the micro-batch), "
        "LoRA (no gradients or optimizer state for the base weights), or QLoRA (4-bit weights)."
    )


def own_parameters(model, skip=()) -> int:
    """Copy the model's floating-point parameters out of the file they were loaded from, and
    return how many bytes were copied.

    transformers maps a safetensors file into memory and reads weights from it lazily; every
    page a load or a quantisation touched stays in the process's resident set while any
    tensor still points into the mapping. After the linear layers are replaced by 4-bit twins
    the embeddings and norms are all that point there, yet they keep the whole file's touched
    pages (about 0.4 GiB for this model) counted against a small session. Copying them (about
    0.1 GiB) lets the mapping go. Values are unchanged; only where they are stored moves.
    Parameters in `skip` (e.g. the weights about to be quantised) are left where they are.
    """
    skipped = {id(t) for t in skip}
    copied = 0
    for param in model.parameters():
        if id(param) in skipped:
            continue
        if param.is_floating_point() and param.device.type == "cpu":
            param.data = param.data.clone()
            copied += param.numel() * param.element_size()
    release_memory()
    return copied
