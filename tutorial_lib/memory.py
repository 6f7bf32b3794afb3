"""Memory: parameter counts, optimizer-state bytes, and the peak memory of one run."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
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


def _layer_values_per_token(config, frozen_linears: bool = False) -> int:
    """Values one decoder layer keeps per token for the backward pass (see `activation_bytes`).
    With `frozen_linears` the inputs of the linear layers are not kept: a frozen weight needs
    no gradient, and the gradient of its input needs the weight only (adapters, prompts)."""
    h, i = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    if frozen_linears:  # less the normed inputs of q/k/v and gate/up, o's input, down's input
        return 5 * h + 2 * kv + 3 * i
    return 8 * h + 2 * kv + 4 * i


def activation_bytes(
    config,
    batch: int,
    seq_len: int,
    bytes_per_value: float = 4,
    checkpointing: bool = False,
    layers: int | None = None,
    frozen_linears: bool = False,
) -> int:
    """Rough activation memory of a llama-style decoder: values saved per token per layer.

    Per layer: residual, two norms, attention in/out (~8 hidden), q/k/v (hidden + 2 kv),
    the MLP's gate, up, activation and product (4 intermediate); then the logits over the
    vocabulary, kept in fp32 with their softmax and gradient (3 copies), counted at every
    position: an upper bound when `train` computes them only where a label is trained. With
    gradient `checkpointing` only each layer's input is kept, and one layer at a time is
    recomputed during the backward pass. `layers`: how many of the top layers the backward pass
    runs through (None: all); below the lowest trained weight nothing needs a gradient, so
    nothing is kept (e.g. top-layers tuning). An estimate: kernels and allocators add overhead,
    so compare it with a measured peak.
    """
    tokens = batch * seq_len
    per_layer = _layer_values_per_token(config, frozen_linears)
    depth = config.num_hidden_layers if layers is None else min(layers, config.num_hidden_layers)
    if checkpointing:
        values = tokens * (depth * config.hidden_size + per_layer * (depth > 0))
    else:
        values = tokens * depth * per_layer
    logits = tokens * config.vocab_size * 4 * 3
    return int(values * bytes_per_value) + logits


# bytes of optimizer state per trained value: AdamW keeps two fp32 moments, 8-bit AdamW two
# 8-bit ones (bitsandbytes), SGD nothing, or one fp32 buffer with momentum
OPTIMIZERS = {"adamw": 8, "adamw-8bit": 2, "sgd": 0, "sgd-momentum": 4}


def estimate_training_memory(model, batch: int, seq_len: int, bf16: bool = False) -> MemoryLedger:
    """Predicted memory of training `model` as it is now (which parameters require grad)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    return MemoryLedger(
        weights=sum(storage_bytes(p) for p in model.parameters()),
        gradients=sum(storage_bytes(p) for p in trained),
        optimizer=sum(OPTIMIZERS["adamw"] * logical_numel(p) for p in trained),
        activations=activation_bytes(model.config, batch, seq_len, 2 if bf16 else 4),
    )


LIMIT_ENV = "TUTORIAL_MEMORY_LIMIT_MB"


CGROUP_FILES = (  # (limit, usage): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


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

    @classmethod
    def from_config(cls, config, name: str = "") -> Architecture:
        """The shape of a transformers config (e.g. `model.config`), to estimate it in any setup."""
        fields = (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        )
        shape = {f: getattr(config, f) for f in fields}
        tied = bool(getattr(config, "tie_word_embeddings", False))
        return cls(
            name or getattr(config, "name_or_path", "") or "model",
            **shape,
            tie_word_embeddings=tied,
        )

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) features of one block's linear layers: q, k, v, o, gate, up, down."""
        h, i = self.hidden_size, self.intermediate_size
        kv = self.num_key_value_heads * (h // self.num_attention_heads)
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def linear_params(self) -> int:
        """Weights of the blocks' linear layers: what 8-bit and 4-bit loading quantise."""
        return self.num_hidden_layers * sum(a * b for a, b in self.linear_shapes())

    @property
    def n_params(self) -> int:
        """Parameters: embeddings, attention, MLP and norms of every layer, the output head."""
        h, layers = self.hidden_size, self.num_hidden_layers
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.linear_params + layers * 2 * h + embeddings + h

    @property
    def linear_outputs(self) -> int:
        """Output features of one block's linear layers together: one DoRA magnitude each."""
        return sum(b for _, b in self.linear_shapes())

    def lora_params(self, rank: int) -> int:
        """LoRA's trained values on every linear layer of every block: r · (in + out) each."""
        return self.num_hidden_layers * rank * sum(a + b for a, b in self.linear_shapes())


ARCHITECTURES = {
    "SmolLM2-135M": Architecture("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, True),
    "Llama-3.2-1B": Architecture("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
    "Llama-2-7B": Architecture("Llama-2-7B", 4096, 11008, 32, 32, 32, 32000),
    "Llama-2-13B": Architecture("Llama-2-13B", 5120, 13824, 40, 40, 40, 32000),
    "LLaMA-65B": Architecture("LLaMA-65B", 8192, 22016, 80, 64, 64, 32000),  # the QLoRA paper's
    "Llama-2-70B": Architecture("Llama-2-70B", 8192, 28672, 80, 64, 8, 32000),
}


def full_finetune_ledger(
    arch: Architecture, batch: int, seq_len: int, weight_bytes: float = 4, grad_bytes: float = 4
) -> MemoryLedger:
    """Full fine-tuning with AdamW of a model we only know by its shape (fp32 unless told); in
    16-bit without an fp32 master copy (`estimate` has the other variants)."""
    dtypes = {4: "fp32", 2: "bf16"}
    if weight_bytes not in dtypes or grad_bytes != weight_bytes:
        raise ValueError(
            f"weight_bytes and grad_bytes must both be 4 or both 2, got {weight_bytes}, "
            f"{grad_bytes}; estimate() covers other precisions"
        )
    est = estimate(
        arch,
        method="full",
        dtype=dtypes[weight_bytes],
        batch=batch,
        seq_len=seq_len,
        master_weights=False,
    )
    return MemoryLedger(est.weights, est.gradients, est.optimizer, est.activations)


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


# --- the estimator: any size, method, precision, optimizer and number of GPUs ------------------

FLOAT_DTYPES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}  # bytes per value
# int8: one byte a weight (LLM.int8's per-row scales are negligible); nf4 with double
# quantisation: 4 bits + an 8-bit scale per 64 weights + an fp32 scale per 256 scales = 4.127 bits
WEIGHT_DTYPES = {**FLOAT_DTYPES, "int8": 1.0, "nf4": (4 + 8 / 64 + 32 / (64 * 256)) / 8}
METHODS = ("full", "lora", "qlora", "peft")  # peft: any frozen-base method, by trainable share
SHARDING = {  # which parts each strategy divides between the GPUs (activations: never)
    "none": (),
    "ddp": (),
    "zero1": ("optimizer",),
    "zero2": ("optimizer", "gradients"),
    "zero3": ("optimizer", "gradients", "weights"),
    "fsdp": ("optimizer", "gradients", "weights"),
}


def _one_of(knob: str, value, allowed) -> None:
    """Refuse a value outside `allowed`, naming them all."""
    if value not in allowed:
        raise ValueError(f"{knob} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass(frozen=True)
class TrainingSetup:
    """How a model is trained, as far as memory goes; `estimate` turns it into bytes per device."""

    method: str = "full"  # full, lora, qlora, or peft (any frozen-base method: trainable_fraction)
    dtype: str | None = None  # the base weights as stored (WEIGHT_DTYPES); None: nf4 for qlora,
    #   fp32 otherwise
    compute_dtype: str | None = None  # activations and the weights a quantised model keeps in
    #   float (embeddings, norms); None: fp32 for fp32 weights, bf16 otherwise
    rank: int = 8  # LoRA's r (lora, qlora)
    trainable_fraction: float | None = None  # share of the parameters trained (peft; overrides
    #   LoRA's count, e.g. for a bare parameter count)
    adapter_dtype: str = "fp32"  # added trained weights: peft keeps them fp32; QLoRA's paper bf16
    batch: int = 1  # sequences per device per micro-step
    seq_len: int = 512  # tokens per sequence
    optimizer: str = "adamw"  # OPTIMIZERS
    master_weights: bool | None = None  # an fp32 copy of 16-bit trained weights (mixed precision);
    #   None: yes for full fine-tuning in 16 bits, no otherwise
    gradient_checkpointing: bool = False  # keep each layer's input only; recompute the rest
    frozen_linears: bool = False  # peft: the blocks' linear weights neither train nor carry
    #   LoRA, so their inputs need not be kept (adapters, prompts, (IA)^3, norms, biases)
    dora: bool = False  # lora/qlora as DoRA: a magnitude per output feature, and two more
    #   output-sized values per adapted layer kept for the backward pass (measured here)
    backprop_layers: int | None = None  # top layers the backward pass runs through (None: all;
    #   top-layers tuning: k); `backprop_layers_of(model)` reads it off a model
    gpus: int = 1  # devices training together
    sharding: str = "none"  # SHARDING: none/ddp replicate; zero3/fsdp divide all but activations

    def __post_init__(self) -> None:
        _one_of("method", self.method, METHODS)
        _one_of("optimizer", self.optimizer, list(OPTIMIZERS))
        _one_of("sharding", self.sharding, list(SHARDING))
        _one_of("adapter_dtype", self.adapter_dtype, list(FLOAT_DTYPES))
        dtype = self.dtype or ("nf4" if self.method == "qlora" else "fp32")
        _one_of("dtype", dtype, list(WEIGHT_DTYPES))
        compute = self.compute_dtype or ("fp32" if dtype == "fp32" else "bf16")
        _one_of("compute_dtype", compute, list(FLOAT_DTYPES))
        if self.method == "full" and dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"full fine-tuning trains every weight: dtype must be one of "
                f"{', '.join(FLOAT_DTYPES)}, got {dtype!r} (quantised: qlora)"
            )
        if self.method == "qlora" and dtype != "nf4":
            raise ValueError(
                f"qlora stores the base in nf4, got dtype {dtype!r}; "
                "for another dtype use method 'lora'"
            )
        if self.method == "peft" and self.trainable_fraction is None:
            raise ValueError("method 'peft' needs trainable_fraction (e.g. 0.01 for 1 %)")
        if self.trainable_fraction is not None and not 0 < self.trainable_fraction <= 1:
            raise ValueError(f"trainable_fraction must be in (0, 1], got {self.trainable_fraction}")
        if self.dora and self.method not in ("lora", "qlora"):
            raise ValueError(
                f"dora is a kind of LoRA: method must be lora or qlora, got {self.method!r}"
            )
        if self.backprop_layers is not None and (
            not isinstance(self.backprop_layers, int) or self.backprop_layers < 0
        ):
            raise ValueError(
                f"backprop_layers must be None (all) or an integer >= 0, got {self.backprop_layers!r}"
            )
        for knob in ("rank", "batch", "seq_len", "gpus"):
            value = getattr(self, knob)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{knob} must be a positive integer, got {value!r}")
        master = self.master_weights
        if master is None:
            master = self.method == "full" and FLOAT_DTYPES.get(dtype) == 2
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "compute_dtype", compute)
        object.__setattr__(self, "master_weights", master)

    @property
    def trains_base(self) -> bool:
        """Whether the base weights themselves train (full), rather than added ones."""
        return self.method == "full"


@dataclass
class MemoryEstimate(MemoryLedger):
    """Predicted bytes **per device** of one training step, with what was assumed."""

    model: str = ""
    setup: TrainingSetup = field(default_factory=TrainingSetup)
    n_params: int = 0  # parameters of the base model
    trainable_params: int = 0
    activations_estimated: bool = True  # False for a bare parameter count: no shape, no guess

    def margin(self, gpu_gib: float) -> float:
        """GiB left over on a device of `gpu_gib` GiB (negative: short by that much)."""
        return gpu_gib - self.total / 2**30

    def fits(self, gpu_gib: float) -> bool:
        """Whether one step fits a device of `gpu_gib` GiB (before the CUDA context's share)."""
        return self.margin(gpu_gib) >= 0

    def table(self):
        """GiB per device and bytes per model parameter, by what holds them."""
        import pandas as pd

        rows = [
            {"part": k, "GiB per device": v / 2**30, "bytes / param": v / self.n_params}
            for k, v in self.rows()
        ]
        return pd.DataFrame(rows).set_index("part").round(3)

    def __str__(self) -> str:
        s = self.setup
        head = (
            f"{self.model}: {s.method}, {s.dtype} weights, {s.optimizer}, batch {s.batch} x "
            f"{s.seq_len}, {s.gpus} GPU(s) {s.sharding}"
            + (", checkpointing" if s.gradient_checkpointing else "")
        )
        note = "" if self.activations_estimated else "  (activations: give an architecture)"
        lines = [
            f"{k:<16} {v / 2**30:>8,.2f} GiB  {v / self.n_params:>6.2f} B/param"
            for k, v in self.rows()
        ]
        return "\n".join([head, *lines]) + note


def _as_architecture(model) -> tuple[int, Architecture | None, str]:
    """(parameters, shape or None, name) of a parameter count, preset name, shape or config."""
    if isinstance(model, bool) or model is None:
        raise TypeError(f"give a parameter count, an Architecture or a name, got {model!r}")
    if isinstance(model, int):
        if model <= 0:
            raise ValueError(f"a parameter count must be positive, got {model}")
        return model, None, f"{model / 1e9:g}B parameters"
    if isinstance(model, str):
        _one_of("model", model, list(ARCHITECTURES))
        model = ARCHITECTURES[model]
    if not isinstance(model, Architecture):
        model = Architecture.from_config(model)
    return model.n_params, model, model.name


def _trainable_params(n: int, arch: Architecture | None, setup: TrainingSetup) -> int:
    """How many values train: all (full), a given share, or LoRA's r · (in + out) per layer."""
    if setup.trains_base:
        return n
    if setup.trainable_fraction is not None:
        return round(setup.trainable_fraction * n)
    if arch is None:
        raise ValueError(
            f"{setup.method}'s trainable count needs the layer shapes: give an "
            "Architecture (or a name in ARCHITECTURES), or a trainable_fraction"
        )
    magnitudes = arch.num_hidden_layers * arch.linear_outputs if setup.dora else 0
    return arch.lora_params(setup.rank) + magnitudes


def _base_weight_bytes(n: int, arch: Architecture | None, setup: TrainingSetup) -> float:
    """The base model as stored: quantised blocks keep embeddings and norms in compute dtype."""
    if setup.dtype in FLOAT_DTYPES or arch is None:
        return n * WEIGHT_DTYPES[setup.dtype]
    quantised = arch.linear_params
    return (
        quantised * WEIGHT_DTYPES[setup.dtype] + (n - quantised) * FLOAT_DTYPES[setup.compute_dtype]
    )


def estimate(model, setup: TrainingSetup | None = None, **knobs) -> MemoryEstimate:
    """Bytes per device of training `model` (a parameter count, a name in ARCHITECTURES, an
    Architecture or a transformers config) as `setup` (or its fields as keywords) says.

    Weights, gradients and optimizer state (with any fp32 master copy, as ZeRO counts it) are
    divided between the GPUs by zero3/fsdp; activations never are. Kernels, the CUDA context and
    allocator fragmentation come on top: leave a margin.
    """
    if setup is not None and knobs:
        raise TypeError(f"give the knobs in the TrainingSetup, not as {sorted(knobs)}")
    setup = setup or TrainingSetup(**knobs)
    n, arch, name = _as_architecture(model)
    trainable = _trainable_params(n, arch, setup)
    weights = _base_weight_bytes(n, arch, setup)
    grad_bytes = FLOAT_DTYPES[setup.dtype if setup.trains_base else setup.adapter_dtype]
    if not setup.trains_base:
        weights += trainable * grad_bytes  # the added weights, stored like their gradients
    optimizer = trainable * (OPTIMIZERS[setup.optimizer] + (4 if setup.master_weights else 0))
    parts = {"weights": weights, "gradients": trainable * grad_bytes, "optimizer": optimizer}
    if setup.sharding == "ddp" and setup.gpus > 1:
        # DDP all-reduces through buckets that copy every gradient (unless the model is wrapped
        # with gradient_as_bucket_view=True): measured here on two CPU processes, +1 gradient size
        parts["gradients"] *= 2
    for part in SHARDING[setup.sharding]:
        parts[part] /= setup.gpus
    activations = 0
    if arch is not None:
        activations = activation_bytes(
            arch,
            setup.batch,
            setup.seq_len,
            FLOAT_DTYPES[setup.compute_dtype],
            setup.gradient_checkpointing,
            setup.backprop_layers,
            setup.frozen_linears,
        )
        if setup.dora:  # DoRA's base and adapter outputs, kept for the magnitude's gradient
            tokens, values = setup.batch * setup.seq_len, 2 * arch.linear_outputs
            activations += int(
                tokens * arch.num_hidden_layers * values * FLOAT_DTYPES[setup.compute_dtype]
            )
    return MemoryEstimate(
        **{k: math.ceil(v) for k, v in parts.items()},
        activations=activations,
        model=name,
        setup=setup,
        n_params=n,
        trainable_params=trainable,
        activations_estimated=arch is not None,
    )


EXTRAPOLATION_MODELS = {
    "1B": "Llama-3.2-1B",
    "7B": "Llama-2-7B",
    "13B": "Llama-2-13B",
    "70B": "Llama-2-70B",
}
EXTRAPOLATION_METHODS = {  # how each is usually run on a GPU
    "full": dict(method="full", dtype="bf16"),  # mixed precision: 16 bytes a parameter
    "LoRA": dict(method="lora", dtype="bf16"),
    "QLoRA": dict(method="qlora"),
}


def extrapolation_table(
    gpu_gib: tuple[float, ...] = (16, 24, 48, 80),
    gpus: tuple[int, ...] = (1, 2, 8),
    sharding: str = "fsdp",
    wide: bool = True,
    **knobs,
):
    """Which model sizes each method can train on which GPUs: GiB to spare per device (negative:
    does not fit), sharding over several GPUs. `knobs` go to `TrainingSetup` (defaults: batch 1
    of 512 tokens, gradient checkpointing, LoRA rank 16). `wide=False`: one row per case."""
    import pandas as pd

    knobs = {"batch": 1, "seq_len": 512, "gradient_checkpointing": True, "rank": 16, **knobs}
    rows = []
    for size, arch in EXTRAPOLATION_MODELS.items():
        for label, method in EXTRAPOLATION_METHODS.items():
            for n in gpus:
                est = estimate(
                    arch, gpus=n, sharding="none" if n == 1 else sharding, **method, **knobs
                )
                for memory in gpu_gib:
                    rows.append(
                        {
                            "model": size,
                            "method": label,
                            "GPUs": n,
                            "per GPU (GiB)": round(est.total / 2**30, 1),
                            "GPU (GiB)": memory,
                            "fits": est.fits(memory),
                            "margin (GiB)": round(est.margin(memory), 1),
                        }
                    )
    table = pd.DataFrame(rows)
    if not wide:
        return table.set_index(["model", "method", "GPUs", "GPU (GiB)"])
    grid = table.pivot_table(
        index=["model", "method", "GPUs", "per GPU (GiB)"],
        columns="GPU (GiB)",
        values="margin (GiB)",
        sort=False,
    )
    grid.columns = [f"{c:g} GiB" for c in grid.columns]
    return grid


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


def sharding_table(
    model="Llama-2-7B",
    layouts: tuple[tuple[int, str], ...] = (
        (1, "none"),
        (2, "ddp"),
        (2, "fsdp"),
        (8, "ddp"),
        (8, "fsdp"),
    ),
    **knobs,
):
    """GiB per device of each part, for each (GPUs, sharding) layout of the same training setup
    (`knobs` as for `estimate`): what one machine more, or sharding, changes."""
    import pandas as pd

    rows = []
    for gpus, sharding in layouts:
        est = estimate(model, gpus=gpus, sharding=sharding, **knobs)
        parts = {part: n / 2**30 for part, n in est.rows()}
        rows.append({"GPUs": gpus, "sharding": sharding} | parts)
    return pd.DataFrame(rows).set_index(["GPUs", "sharding"]).round(2)


def backprop_layers_of(model: torch.nn.Module) -> int:
    """How many of the top decoder layers a backward pass runs through: from the lowest layer
    holding a trained weight up; all of them if anything below the layers trains (embeddings,
    soft prompts), none if only the head or the final norm does."""
    layers = model.config.num_hidden_layers
    lowest = layers
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        match = re.search(r"\.layers\.(\d+)\.", name)
        if match:
            lowest = min(lowest, int(match.group(1)))
        elif not re.search(r"(lm_head|\.norm\.)", name):
            return layers  # a prompt, a prefix or the embeddings: the whole depth
    return layers - lowest


def accelerate_figures(model, mixed_precision: str = "float32") -> dict[str, int]:
    """What `accelerate estimate-memory` says for full fine-tuning with Adam (its
    `estimate_training_usage`, fed this model's fp32 bytes): weights, gradients, optimizer
    state, and its peak ("step"). It has no activations and no notion of adapters."""
    from accelerate.commands.estimate import estimate_training_usage

    n, _, _ = _as_architecture(model)
    return estimate_training_usage(4 * n, mixed_precision)


VALIDATED_WITHIN = 25  # %: every method's estimate against its measured peak on SmolLM2-135M at
#   batch 4 and 8 (benchmarks/results/memory-estimate.json); the worst, full fine-tuning, +24 %


ESTIMATED_AS = {  # registered method -> the estimator's method, where it has one of its own
    "full": "full",
    "lora": "lora",
    "lora-scratch": "lora",
    "dora": "lora",
    "qlora": "qlora",
}


def setup_for(model: torch.nn.Module, method: str, batch: int, seq_len: int) -> TrainingSetup:
    """How `model`, as `apply_method(model, method)` prepared it, trains, for the estimator: the
    estimator's own method where it has one, else a frozen base with the measured trainable
    share and backward depth."""
    trainable, _ = count_params(model)
    arch = Architecture.from_config(model.config)  # the base: added weights are not in its count
    as_ = ESTIMATED_AS.get(method, "peft")
    rank = 8
    if hasattr(model, "peft_config"):
        rank = getattr(next(iter(model.peft_config.values())), "r", rank) or rank
    elif as_ == "lora":  # our own LoraLinear: the rank from the count, r * (in + out) a layer
        rank = max(1, round(trainable / arch.lora_params(1)))
    fraction = None if as_ in ("full", "lora", "qlora") else trainable / arch.n_params
    compute = "fp32" if as_ == "qlora" else None
    layers = None if as_ in ("full", "lora", "qlora") else backprop_layers_of(model)
    linears = re.compile(r"(q|k|v|o|gate|up|down)_proj\.weight$")
    trained_linear = any(p.requires_grad and linears.search(n) for n, p in model.named_parameters())
    return TrainingSetup(
        method=as_,
        dora=method == "dora",
        rank=rank,
        trainable_fraction=fraction,
        batch=batch,
        seq_len=seq_len,
        compute_dtype=compute,
        backprop_layers=layers,
        frozen_linears=as_ == "peft" and not trained_linear,
    )


def validation_table(runs: list[dict]):
    """Measured against estimated training memory (beyond the loaded weights), one row per
    method and batch size, from `benchmarks/memory_estimate.py`'s runs on SmolLM2-135M; the estimate is
    recomputed here from each run's recorded setup, so the table shows today's estimator."""
    import pandas as pd

    rows = []
    for run in runs:
        if "error" in run:
            continue
        est = estimate("SmolLM2-135M", TrainingSetup(**run["setup"]))
        rows.append(
            {
                "method": run["method"],
                "batch": run["batch"],
                "estimated as": run["setup"]["method"],
                "measured (MiB)": run["measured"] / 2**20,
                "estimated (MiB)": est.beyond_weights / 2**20,
                "error (%)": 100 * (est.beyond_weights / run["measured"] - 1),
            }
        )
    return pd.DataFrame(rows).set_index(["method", "batch"]).round(1)


def accelerate_table(model="SmolLM2-135M", batch: int = 8, seq_len: int = 128):
    """Full fine-tuning with AdamW in fp32 and in mixed bf16, by this estimator and by
    `accelerate estimate-memory`'s arithmetic (GiB): where both apply, and where they part."""
    import pandas as pd

    rows = []
    for label, dtype, precision in (
        ("fp32", "fp32", "float32"),
        ("bf16 mixed", "bf16", "bfloat16"),
    ):
        ours = estimate(model, method="full", dtype=dtype, batch=batch, seq_len=seq_len)
        theirs = accelerate_figures(model, precision)
        for part, key in (
            ("weights", "model"),
            ("gradients", "gradients"),
            ("optimizer", "optimizer"),
        ):
            rows.append(
                {
                    "precision": label,
                    "part": part,
                    "ours": getattr(ours, part) / 2**30,
                    "accelerate": theirs[key] / 2**30,
                }
            )
        rows.append(
            {"precision": label, "part": "activations", "ours": ours.activations / 2**30}
            | {"accelerate": None}
        )
        peak = max(theirs["step"], theirs["model"] + theirs["gradients"] + theirs["optimizer"])
        rows.append(
            {
                "precision": label,
                "part": "total",
                "ours": ours.total / 2**30,
                "accelerate": peak / 2**30,
            }
        )
    return pd.DataFrame(rows).set_index(["precision", "part"]).round(3)
