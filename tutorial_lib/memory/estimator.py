"""The estimator: bytes per device of training any size, method, precision, optimizer and number of
GPUs, validated against measured peaks (`tables.validation_table`). The one answer to "how much
memory will this need": for a loaded model, `estimate(model.config, setup_for(model, ...))`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tutorial_lib.memory.shapes import ARCHITECTURES, Architecture, activation_bytes, target_names

FLOAT_DTYPES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}  # bytes per value
# int8: one byte a weight (LLM.int8's per-row scales are negligible); nf4 with double
# quantisation: 4 bits + an 8-bit scale per 64 weights + an fp32 scale per 256 scales = 4.127 bits
WEIGHT_DTYPES = {**FLOAT_DTYPES, "int8": 1.0, "nf4": (4 + 8 / 64 + 32 / (64 * 256)) / 8}
# bytes of optimizer state per trained value: AdamW keeps two fp32 moments, 8-bit AdamW two
# 8-bit ones (bitsandbytes), SGD nothing, or one fp32 buffer with momentum
OPTIMIZERS = {"adamw": 8, "adamw-8bit": 2, "sgd": 0, "sgd-momentum": 4}
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
    targets: str | tuple[str, ...] = "all-linear"  # LoRA's target layers in each block:
    #   "all-linear", "attention", or module names such as ("q_proj", "v_proj")
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
    added_weights: bool = True  # peft: the trained weights are added to the base (adapters,
    #   prompts); False when they are some of the base's own (top layers, norms, frozen
    #   embeddings), which the base's count already holds
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
        self._check_method(dtype)
        self._check_numbers()
        master = self.master_weights
        if master is None:
            master = self.method == "full" and FLOAT_DTYPES.get(dtype) == 2
        targets = self.targets if isinstance(self.targets, str) else tuple(self.targets)
        target_names(targets)  # refuses an unknown set or name
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "compute_dtype", compute)
        object.__setattr__(self, "master_weights", master)
        object.__setattr__(self, "targets", targets)

    def _check_method(self, dtype: str) -> None:
        """Refuse knobs the method cannot have (a quantised full fine-tune, DoRA without LoRA)."""
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
        if self.dora and self.method not in ("lora", "qlora"):
            raise ValueError(
                f"dora is a kind of LoRA: method must be lora or qlora, got {self.method!r}"
            )

    def _check_numbers(self) -> None:
        """Refuse a share outside (0, 1], a negative depth, or a count that is not positive."""
        if self.trainable_fraction is not None and not 0 < self.trainable_fraction <= 1:
            raise ValueError(f"trainable_fraction must be in (0, 1], got {self.trainable_fraction}")
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

    @property
    def trains_base(self) -> bool:
        """Whether the base weights themselves train (full), rather than added ones."""
        return self.method == "full"


@dataclass
class MemoryEstimate:
    """Predicted bytes **per device** of one training step, by what holds them, with what was
    assumed."""

    weights: int  # every parameter as stored (fp32: 4 bytes; nf4: ~half a byte), adapters too
    gradients: int  # one gradient per trained value
    optimizer: int  # the optimizer's state per trained value, and any fp32 master copy
    activations: int  # tensors autograd keeps for the backward pass, plus the logits
    model: str = ""
    setup: TrainingSetup = field(default_factory=TrainingSetup)
    n_params: int = 0  # parameters of the base model
    trainable_params: int = 0
    activations_estimated: bool = True  # False for a bare parameter count: no shape, no guess

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
            f"{s.seq_len}, {_devices(s.gpus, s.sharding)}"
            + (", checkpointing" if s.gradient_checkpointing else "")
        )
        note = "" if self.activations_estimated else "  (activations: give an architecture)"
        lines = [
            f"{k:<16} {v / 2**30:>8,.2f} GiB  {v / self.n_params:>6.2f} B/param"
            for k, v in self.rows()
        ]
        return "\n".join([head, *lines]) + note


def _devices(gpus: int, sharding: str) -> str:
    """'1 device', '4 devices, no sharding' or '4 devices, zero3': how the step is spread."""
    if gpus == 1:
        return "1 device"
    return f"{gpus} devices, " + ("no sharding" if sharding == "none" else sharding)


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
    """How many values train: all (full), a given share, or LoRA's r · (in + out) on each
    target layer (`Architecture.lora_params`), with DoRA's magnitudes."""
    if setup.trains_base:
        return n
    if setup.trainable_fraction is not None:
        return round(setup.trainable_fraction * n)
    if arch is None:
        raise ValueError(
            f"{setup.method}'s trainable count needs the layer shapes: give an "
            "Architecture (or a name in ARCHITECTURES), or a trainable_fraction"
        )
    magnitudes = arch.num_hidden_layers * arch.lora_outputs(setup.targets) if setup.dora else 0
    return arch.lora_params(setup.rank, setup.targets) + magnitudes


def _base_weight_bytes(n: int, arch: Architecture | None, setup: TrainingSetup) -> float:
    """The base model as stored: quantised blocks keep embeddings and norms in compute dtype."""
    if setup.dtype in FLOAT_DTYPES or arch is None:
        return n * WEIGHT_DTYPES[setup.dtype]
    quantised = arch.linear_params
    return (
        quantised * WEIGHT_DTYPES[setup.dtype] + (n - quantised) * FLOAT_DTYPES[setup.compute_dtype]
    )


def _state_bytes(n: int, arch: Architecture | None, setup: TrainingSetup) -> dict[str, float]:
    """Weights, gradients and optimizer state per device, before activations."""
    trainable = _trainable_params(n, arch, setup)
    weights = _base_weight_bytes(n, arch, setup)
    grad_bytes = FLOAT_DTYPES[setup.dtype if setup.trains_base else setup.adapter_dtype]
    if not setup.trains_base and setup.added_weights:
        weights += trainable * grad_bytes  # the added weights, stored like their gradients
    optimizer = trainable * (OPTIMIZERS[setup.optimizer] + (4 if setup.master_weights else 0))
    parts = {"weights": weights, "gradients": trainable * grad_bytes, "optimizer": optimizer}
    if setup.sharding == "ddp" and setup.gpus > 1:
        # DDP all-reduces through buckets that copy every gradient (unless the model is wrapped
        # with gradient_as_bucket_view=True): measured here on two CPU processes, +1 gradient size
        parts["gradients"] *= 2
    for part in SHARDING[setup.sharding]:
        parts[part] /= setup.gpus
    return parts


def _activations(arch: Architecture, setup: TrainingSetup) -> int:
    """What the forward pass keeps for the backward pass, on one device."""
    compute = FLOAT_DTYPES[setup.compute_dtype]
    activations = activation_bytes(
        arch,
        setup.batch,
        setup.seq_len,
        compute,
        setup.gradient_checkpointing,
        setup.backprop_layers,
        setup.frozen_linears,
    )
    if setup.dora:  # DoRA's base and adapter outputs, kept for the magnitude's gradient
        tokens, values = setup.batch * setup.seq_len, 2 * arch.lora_outputs(setup.targets)
        activations += int(tokens * arch.num_hidden_layers * values * compute)
    return activations


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
    parts = _state_bytes(n, arch, setup)
    return MemoryEstimate(
        **{k: math.ceil(v) for k, v in parts.items()},
        activations=_activations(arch, setup) if arch is not None else 0,
        model=name,
        setup=setup,
        n_params=n,
        trainable_params=_trainable_params(n, arch, setup),
        activations_estimated=arch is not None,
    )
