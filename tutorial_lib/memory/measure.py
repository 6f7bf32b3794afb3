"""Measuring a run: parameters, bytes as stored, optimizer state, and the peak memory of a block."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch


def logical_numel(p: torch.Tensor) -> int:
    """Number of values a parameter represents: a 4-bit tensor packs two values per byte, so
    its storage numel is half its parameter count (counting storage would halve the model)."""
    state = getattr(p, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return int(torch.Size(state.shape).numel())
    return p.numel()


def storage_bytes(p: torch.Tensor) -> int:
    """Bytes a tensor occupies as stored (packed 4-bit weights: half a byte per value)."""
    return p.numel() * p.element_size()


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights are counted once, 4-bit weights unpacked."""
    trainable = total = 0
    for p in model.parameters():  # parameters() already skips tied duplicates
        n = logical_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's state (AdamW: two moments per trained value)."""
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t)
    )


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
PEAK_LOG_ENV = "TUTORIAL_PEAK_LOG"  # a file to which each reset first appends the peak it erases


def _high_water_bytes() -> int | None:
    """The kernel's peak resident memory since the last reset (Linux VmHWM), or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _log_high_water() -> None:
    """Append the kernel's peak so far, in bytes, to the file named by $TUTORIAL_PEAK_LOG. A
    reset erases the process's lifetime peak; whoever watches the process from outside (the
    lesson benchmark) reads the erased peaks back from this file."""
    target, peak = os.environ.get(PEAK_LOG_ENV), _high_water_bytes()
    if target and peak is not None:
        with open(target, "a") as log:
            log.write(f"{peak}\n")


def _reset_high_water() -> bool:
    """Lower the kernel's peak to the current resident memory (Linux >= 4.0); False if refused.
    The peak it erases is first logged (`_log_high_water`)."""
    _log_high_water()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _high_water_bytes() is not None


class PeakMemory:
    """Peak memory during a `with` block: CUDA max-allocated, or the CPU resident peak.

    On CPU the process's lifetime peak would include every earlier run in the same notebook.
    On Linux the block resets the kernel's own peak counter (VmHWM) at its start and reads it
    at its end: exact, and with nothing running beside training. Elsewhere a background thread
    samples resident memory every `interval` seconds, which can miss a shorter spike (a slight
    underestimate) and takes a little CPU from training.
    """

    _open: list[PeakMemory] = []  # blocks inside which another may start (nested measurements)

    def __init__(self, device: torch.device, interval: float = 0.01):
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.start_bytes = 0
        self.method = "cuda" if device.type == "cuda" else ""
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            time.sleep(self.interval)

    @classmethod
    def _fold_kernel_peak(cls) -> None:
        """Credit the kernel's peak so far to every open block before it is reset or read."""
        peak = _high_water_bytes() or 0
        for block in cls._open:
            if block.method == "kernel":
                block.peak_bytes = max(block.peak_bytes, peak)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return self
        self.start_bytes = self.peak_bytes = _rss_bytes()
        self._fold_kernel_peak()
        if _reset_high_water():
            self.method = "kernel"
        else:
            self.method = "sampled"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        PeakMemory._open.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        self._fold_kernel_peak()
        PeakMemory._open.remove(self)
        if self.method == "sampled":
            self._stop.set()
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())
