"""QLoRA (Dettmers et al., 2023): the frozen base in 4-bit NF4 (bitsandbytes), LoRA (peft) on top.

Lesson 06 builds NF4 by hand in `tutorial_lib.quant`; this is the practitioners' version. Every
linear layer of the decoder blocks is quantised; the embeddings and the output head stay as the
library loaded them (fp32 here, tied to each other), as the QLoRA paper and transformers'
`BitsAndBytesConfig` do by default.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tutorial_lib.memory.machine import own_parameters, release_memory
from tutorial_lib.methods.lora import LoraMethodConfig, apply_lora
from tutorial_lib.methods.registry import register
from tutorial_lib.quant import quiet_bitsandbytes
from tutorial_lib.units import mib

COMPUTE_DTYPES = {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}
KEEP_UNQUANTISED = ("lm_head",)  # the output head (tied to the embeddings here)


@dataclass
class QloraConfig(LoraMethodConfig):
    """LoRA's knobs plus how the frozen base is stored."""

    double_quant: bool = True  # 8-bit scales of the scales: ~0.127 instead of 0.5 bit per weight
    compute_dtype: str = "auto"  # "auto": bf16 where the machine computes it fast, else fp32
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, slower

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got {self.compute_dtype!r}"
            )


def compute_dtype_for(config: QloraConfig, device: torch.device) -> torch.dtype:
    """bf16 only where it is fast (lesson 01's `fast_bf16`); emulated bf16 is slower than fp32."""
    from tutorial_lib.device import fast_bf16

    chosen = COMPUTE_DTYPES[config.compute_dtype]
    if chosen is None:
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    return chosen


def _to_4bit(linear: nn.Linear, double_quant: bool, compute_dtype: torch.dtype) -> nn.Module:
    """The same layer with its weight stored in NF4 (quantised when moved to its device)."""
    bnb = quiet_bitsandbytes()
    device = linear.weight.device
    quantised = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        compress_statistics=double_quant,
        quant_type="nf4",
        device="meta",
    )
    quantised.weight = bnb.nn.Params4bit(
        linear.weight.data.float(),
        requires_grad=False,
        compress_statistics=double_quant,
        quant_type="nf4",
        module=quantised,
    )
    if linear.bias is not None:
        quantised.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    quantised = quantised.to(device)
    guard_cpu_gradients(quantised)
    return quantised


def guard_cpu_gradients(model: nn.Module) -> int:
    """Keep gradients flowing through 4-bit layers on CPUs with AVX512-BF16.

    bitsandbytes repacks a `Linear4bit` weight into a CPU inference format on its first
    eval-mode, no-grad forward; every later training forward then drops the gradient through the
    frozen 4-bit path, with only a warning (LoRA gradients 87 % off after one evaluation pass,
    measured). Lessons evaluate between training runs, so the repacking is switched off on every
    4-bit layer (bitsandbytes' documented switch). Returns how many layers were guarded.
    """
    bnb = quiet_bitsandbytes()
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def quantize_base(
    model: nn.Module, double_quant: bool = True, compute_dtype=torch.float32, own: bool = True
):
    """Replace every linear layer except the output head by its NF4 twin, in place.

    With `own`, what stays fp32 (embeddings, norms) is copied out of the weights file first,
    so that once the last fp32 linear layer is gone nothing points into the file and the pages
    quantising read leave the process (`memory.machine.own_parameters`): about 0.3 GiB less
    held while the model is used, for 0.1-0.2 GiB more at the moment of quantising. A model
    that is only measured and dropped (`footprints`) skips it."""
    targets = [
        (parent, child_name)  # names, not the layers: an old layer is freed once replaced
        for parent_name, parent in model.named_modules()
        for child_name, child in parent.named_children()
        if isinstance(child, nn.Linear)
        and f"{parent_name}.{child_name}".lstrip(".").rsplit(".", 1)[-1] not in KEEP_UNQUANTISED
    ]
    if own:
        own_parameters(model, skip=[getattr(parent, name).weight for parent, name in targets])
    for parent, child_name in targets:
        setattr(
            parent, child_name, _to_4bit(getattr(parent, child_name), double_quant, compute_dtype)
        )
        gc.collect(1)  # quantising leaves young reference cycles: free them layer by layer
        if own:
            release_memory(collect=False)  # and hand each layer's scratch back at once
    model.is_loaded_in_4bit = True  # what peft reads to wrap 4-bit layers with its LoRA
    return model


@register(
    "qlora",
    "reparameterization",
    QloraConfig,
    default_lr=3e-3,  # LoRA's: the same adapters on a 4-bit copy of the same base
    description="LoRA on a frozen base stored in 4-bit NF4 (bitsandbytes + peft)",
)
def apply_qlora(model, config: QloraConfig):
    """Quantise the base to NF4, prepare it for k-bit training, add peft LoRA adapters."""
    from peft import prepare_model_for_kbit_training

    device = next(model.parameters()).device
    quantize_base(model, config.double_quant, compute_dtype_for(config, device))
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=config.gradient_checkpointing
    )
    return apply_lora(model, config)


def quantized_bytes(model: nn.Module) -> int:
    """Bytes the model's weights occupy, 4-bit codes and their scales included (a 4-bit tensor's
    scales live beside it, not among the model's parameters, so parameter sizes miss them)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            total += _state_bytes(state)
    return total


def _state_bytes(state) -> int:
    """The scales of one 4-bit tensor: fp32 absmax, or 8-bit codes plus their own scales (the
    256-value code book is one shared constant, not counted per tensor)."""
    total = state.absmax.numel() * state.absmax.element_size()
    if state.state2 is not None:
        total += state.state2.absmax.numel() * state.state2.absmax.element_size()
        total += 4  # the offset
    return total


# --- what each storage format costs, measured -----------------------------------------------


def _linears(model: nn.Module) -> list[nn.Linear]:
    """The layers a 4-bit or 8-bit base stores in fewer bits: every linear but the head."""
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] not in KEEP_UNQUANTISED
    ]


def _int8_rows_bytes(linear: nn.Linear) -> int:
    """Bytes of a weight stored as int8 with one fp32 absmax per row (LLM.int8()'s layout),
    quantised here by `tutorial_lib.quant` and counted from the tensors it made."""
    from tutorial_lib import quant

    levels = torch.arange(-127, 128, dtype=torch.float32) / 127
    q = quant.quantize_blockwise(linear.weight, levels, block=linear.in_features)
    return q.codes.numel() * 1 + q.absmax.numel() * q.absmax.element_size()


def _linear_bytes(model: nn.Module) -> int:
    """Bytes of the linear layers' weights as stored, 4-bit scales included."""
    total = 0
    for m in _linears(model):
        total += m.weight.numel() * m.weight.element_size()
        state = getattr(m.weight, "quant_state", None)
        total += _state_bytes(state) if state is not None else 0
    return total


FORMATS = ("fp32", "bf16", "int8 (per-row absmax)", "NF4", "NF4 + double quant")


def footprints(load=None):
    """The model's weights in fp32, bf16, int8, NF4 and NF4 + double quantisation: bytes
    measured on the real tensors, beside the bits-per-weight arithmetic. `load()` returns a
    fresh (model, tokenizer); each format stores its own copy. Embeddings and norms stay as
    loaded (fp32) except in the bf16 row, where everything is bf16. One model is held at a
    time, and freed memory is handed back before the next loads (`release_memory`)."""
    import pandas as pd

    from tutorial_lib import quant
    from tutorial_lib.models import load_base_model

    load = load or load_base_model
    model = load()[0]
    linears = _linears(model)
    n = sum(m.weight.numel() for m in linears)
    rows_per_weight = sum(m.out_features for m in linears) / n  # int8's fp32 scales, one per row
    int8 = sum(_int8_rows_bytes(m) for m in linears)
    rest = quantized_bytes(model) - _linear_bytes(model)  # embeddings (tied to the head), norms
    measured = {  # format: (bytes of the linear layers, bytes of the whole model)
        "fp32": (_linear_bytes(model), quantized_bytes(model)),
        "int8 (per-row absmax)": (int8, rest + int8),
    }
    model.to(torch.bfloat16)  # in place: one copy of the model in memory at a time
    measured["bf16"] = (_linear_bytes(model), quantized_bytes(model))
    del model, linears
    release_memory()
    for label, double in (("NF4", False), ("NF4 + double quant", True)):
        quantised = quantize_base(load()[0], double_quant=double, own=False)  # measured, dropped
        measured[label] = (_linear_bytes(quantised), quantized_bytes(quantised))
        del quantised
        release_memory()
    measured = {label: measured[label] for label in FORMATS}  # the table's order
    predicted_bits = {
        "fp32": 32,
        "bf16": 16,
        "int8 (per-row absmax)": 8 + 32 * rows_per_weight,
        "NF4": quant.bits_per_param(),
        "NF4 + double quant": quant.bits_per_param(double=True),
    }
    bf16_whole = measured["bf16"][1]
    rows = [
        {
            "format": label,
            "bits per weight (arithmetic)": round(predicted_bits[label], 3),
            "bits per weight (measured)": round(8 * linear / n, 3),
            "linear layers (MiB)": round(mib(linear), 1),
            "whole model (MiB)": round(mib(whole), 1),
            "whole model / bf16": round(whole / bf16_whole, 3),
        }
        for label, (linear, whole) in measured.items()
    ]
    return pd.DataFrame(rows).set_index("format")


def layer_timing(linear: nn.Linear, tokens: int = 512, repeats: int = 20) -> dict[str, float]:
    """Milliseconds for one forward of `linear` on `tokens` inputs, stored in fp32 and in NF4,
    and for NF4's dequantisation alone: where QLoRA's extra time per step goes on a CPU."""
    import copy
    import time

    bnbf = quiet_bitsandbytes().functional
    x = torch.randn(tokens, linear.in_features)
    four_bit = _to_4bit(copy.deepcopy(linear), double_quant=True, compute_dtype=torch.float32)
    weight = four_bit.weight

    def best_ms(fn) -> float:
        fn()  # a first call may compile or allocate
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * min(times)

    with torch.no_grad():
        return {
            "fp32 matmul": best_ms(lambda: linear(x)),
            "NF4: dequantise + matmul": best_ms(lambda: four_bit(x)),
            "NF4: dequantise alone": best_ms(
                lambda: bnbf.dequantize_4bit(weight.data, weight.quant_state)
            ),
        }


def optimizer_states(
    model: nn.Module, optimizers: dict[str, Callable], input_ids: torch.Tensor
) -> dict[str, int]:
    """Bytes of optimizer state each optimizer keeps after one step on `input_ids`, from the same
    starting weights: how much paged 8-bit AdamW saves against plain AdamW (lesson 06, GPU cell).

    `optimizers` maps a name to a factory taking the trained parameters, e.g.
    `{"AdamW": lambda ps: torch.optim.AdamW(ps, lr=3e-3)}`. The weights are put back after each
    step, so every optimizer sees the same model.
    """
    from tutorial_lib.memory import optimizer_state_bytes

    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    states = {}
    for name, make in optimizers.items():
        optimizer = make(params)
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        states[name] = optimizer_state_bytes(optimizer)
        with torch.no_grad():
            for p, value in zip(params, start):
                p.copy_(value)
    return states
