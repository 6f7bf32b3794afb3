"""Memory: parameter counts, optimizer-state bytes, and the peak memory of one run."""

from __future__ import annotations

import threading
import time

import torch


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights are counted once."""
    trainable = total = 0
    for p in model.parameters():  # parameters() already skips tied duplicates
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
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


class PeakMemory:
    """Peak memory during a `with` block: CUDA max-allocated, or CPU resident memory sampled.

    On CPU the process's lifetime peak (ru_maxrss) would include every earlier run in the same
    notebook, so a background thread samples resident memory while this block runs instead.
    A sample every 10 ms can miss a shorter spike; the figure is a slight underestimate.
    """

    def __init__(self, device: torch.device, interval: float = 0.01):
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.start_bytes = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.start_bytes = self.peak_bytes = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
