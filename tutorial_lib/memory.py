"""Memory: parameter counts, optimizer-state bytes, and the peak memory of one run."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
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


def _high_water_bytes() -> int | None:
    """The kernel's peak resident memory since the last reset (Linux VmHWM), or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_high_water() -> bool:
    """Lower the kernel's peak to the current resident memory (Linux >= 4.0); False if refused."""
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


# --- the ledger: what training needs, predicted before it runs ------------------------------


@dataclass
class MemoryLedger:
    """Predicted bytes of one training step, by what holds them."""

    weights: int  # every parameter as stored (fp32: 4 bytes; nf4: half a byte)
    gradients: int  # one gradient per trained value, in the parameter's dtype
    optimizer: int  # AdamW: two fp32 moments per trained value
    activations: int  # tensors autograd keeps for the backward pass, plus the logits

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def beyond_weights(self) -> int:
        """What training adds to a model already loaded: the part a preflight must find room for."""
        return self.total - self.weights

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimizer state", self.optimizer),
            ("activations", self.activations),
            ("total", self.total),
        ]

    def __str__(self) -> str:
        return "\n".join(f"{name:<16} {n / 2**20:>9,.0f} MiB" for name, n in self.rows())


def activation_bytes(config, batch: int, seq_len: int, bytes_per_value: int = 4) -> int:
    """Rough activation memory of a llama-style decoder: values saved per token per layer.

    Per layer: residual, two norms, attention in/out (~8 hidden), q/k/v (hidden + 2 kv),
    the MLP's gate, up, activation and product (4 intermediate); then the logits over the
    vocabulary, kept in fp32 with their softmax and gradient (3 copies), counted at every
    position: an upper bound when `train` computes them only where a label is trained. An
    estimate: kernels and allocators add overhead, so compare it with a measured peak.
    """
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_token_layer = 8 * h + 2 * kv + 4 * i
    tokens = batch * seq_len
    layers = tokens * config.num_hidden_layers * per_token_layer * bytes_per_value
    logits = tokens * config.vocab_size * 4 * 3
    return layers + logits


def estimate_training_memory(model, batch: int, seq_len: int, bf16: bool = False) -> MemoryLedger:
    """Predicted memory of training `model` as it is now (which parameters require grad)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    return MemoryLedger(
        weights=sum(storage_bytes(p) for p in model.parameters()),
        gradients=sum(storage_bytes(p) for p in trained),
        optimizer=sum(2 * 4 * logical_numel(p) for p in trained),
        activations=activation_bytes(model.config, batch, seq_len, 2 if bf16 else 4),
    )


LIMIT_ENV = "TUTORIAL_MEMORY_LIMIT_MB"


def available_memory(device: torch.device) -> int:
    """Free memory a run can use: free VRAM on CUDA, available RAM otherwise.

    $TUTORIAL_MEMORY_LIMIT_MB caps it, to rehearse a smaller machine (and to test the preflight).
    """
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    limit = os.environ.get(LIMIT_ENV)
    return min(free, int(float(limit) * 2**20)) if limit else free


class WontFitError(MemoryError):
    """A run was predicted not to fit; raised before training rather than killed by the OS."""


def preflight(ledger: MemoryLedger, device: torch.device, headroom: float = 0.9) -> None:
    """Stop before a run that is predicted not to fit, with the numbers and what to change."""
    free = available_memory(device)
    if ledger.beyond_weights <= headroom * free:
        return
    raise WontFitError(
        f"this run needs about {ledger.beyond_weights / 2**20:,.0f} MiB beyond the loaded weights, "
        f"but only {free / 2**20:,.0f} MiB of {device.type} memory is free.\n{ledger}\n"
        "Try a smaller batch_size with grad_accum (activations shrink with the micro-batch), "
        "LoRA (no gradients or optimizer state for the base weights), or QLoRA (4-bit weights)."
    )


# --- scaling the ledger to models we cannot load here -------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """The shape numbers the ledger needs; public figures of well-known llama-style models."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @property
    def n_params(self) -> int:
        """Parameters: embeddings, attention, MLP and norms of every layer, the output head."""
        h, i, layers = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        kv = self.num_key_value_heads * (h // self.num_attention_heads)
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return layers * per_layer + embeddings + h


ARCHITECTURES = {
    "SmolLM2-135M": Architecture("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, True),
    "Llama-3.2-1B": Architecture("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
    "Llama-2-7B": Architecture("Llama-2-7B", 4096, 11008, 32, 32, 32, 32000),
    "Llama-2-70B": Architecture("Llama-2-70B", 8192, 28672, 80, 64, 8, 32000),
}


def full_finetune_ledger(
    arch: Architecture, batch: int, seq_len: int, weight_bytes: float = 4, grad_bytes: float = 4
) -> MemoryLedger:
    """Full fine-tuning with AdamW of a model we only know by its shape (fp32 unless told)."""
    n = arch.n_params
    return MemoryLedger(
        weights=int(n * weight_bytes),
        gradients=int(n * grad_bytes),
        optimizer=8 * n,
        activations=activation_bytes(arch, batch, seq_len, 4 if weight_bytes == 4 else 2),
    )


PRECISIONS = {"fp32": 4, "bf16 + fp32 Adam": 2}  # bytes per weight and per gradient


def scaling_table(batch: int = 8, seq_len: int = 128, architectures: dict | None = None):
    """Full fine-tuning's memory, in GiB, for each known architecture and precision: the
    arithmetic behind "why fine-tuning a 7B model needs a big GPU"."""
    import pandas as pd

    rows = []
    for arch in (architectures or ARCHITECTURES).values():
        for label, nbytes in PRECISIONS.items():
            ledger = full_finetune_ledger(arch, batch, seq_len, nbytes, nbytes)
            rows.append(
                {
                    "model": arch.name,
                    "precision": label,
                    "params (B)": round(arch.n_params / 1e9, 3),
                    **{f"{k} (GiB)": round(v / 2**30, 1) for k, v in ledger.rows()},
                }
            )
    return pd.DataFrame(rows).set_index(["model", "precision"])


def _layer_free(name: str) -> str:
    """A parameter's name with its layer index and wrapper prefixes dropped, so the same
    weight in every block shares one row: "model.layers.3.mlp.adapter.up.weight" ->
    "layers.*.mlp.adapter.up.weight"."""
    parts = name.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return ".".join(["layers", "*", *parts[i + 2 :]])
    return ".".join(parts[-3:])


def trainable_where(model: torch.nn.Module) -> dict[str, int]:
    """Where a method's trainable parameters sit: count per kind of weight, every block summed."""
    where: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = _layer_free(name)
            where[key] = where.get(key, 0) + logical_numel(p)
    return where


def trainable_table(models: dict[str, torch.nn.Module]):
    """One row per method: trainable parameters, their share, and where they sit."""
    import pandas as pd

    rows = []
    for name, model in models.items():
        trainable, total = count_params(model)
        where = trainable_where(model)
        rows.append(
            {
                "method": name,
                "trainable params": trainable,
                "trainable %": round(100 * trainable / total, 4),
                "where (params)": ", ".join(f"{k} ({v:,})" for k, v in where.items()),
            }
        )
    return pd.DataFrame(rows).set_index("method")
