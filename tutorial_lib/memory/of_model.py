"""A loaded model's training setup, read off the model itself (what trains, LoRA's rank and target
layers, 4-bit weights, how deep the backward pass goes), for `estimate`."""

from __future__ import annotations

import re

import torch

from tutorial_lib.memory.estimator import TrainingSetup
from tutorial_lib.memory.measure import count_params
from tutorial_lib.memory.shapes import ATTENTION, LINEARS, Architecture

ESTIMATED_AS = {  # registered method -> the estimator's method, where it has one of its own
    "full": "full",
    "lora": "lora",
    "lora-scratch": "lora",
    "dora": "lora",
    "qlora": "qlora",
}
_LORA_A = re.compile(r"\.(\w+)\.lora_A(\.|$)")  # peft's "q_proj.lora_A.default.weight", ours too
_LINEAR_WEIGHT = re.compile(r"(q|k|v|o|gate|up|down)_proj\.weight$")
_DORA_MAGNITUDE = "lora_magnitude_vector"  # peft's name for DoRA's trained magnitudes


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


def lora_layout(model: torch.nn.Module) -> tuple[int, str | tuple[str, ...]] | None:
    """(rank, target layers) of the LoRA layers on a model, peft's or our own; None without any.
    The targets are "all-linear" or "attention" where they are one of those sets."""
    ranks: list[int] = []
    names: set[str] = set()
    for name, p in model.named_parameters():
        match = _LORA_A.search(name)
        if match and p.requires_grad:
            names.add(match.group(1))
            ranks.append(p.shape[0])  # A is (r, d_in)
    if not ranks:
        return None
    rank = max(set(ranks), key=ranks.count)
    if names == set(LINEARS):
        return rank, "all-linear"
    if names == set(ATTENTION):
        return rank, "attention"
    return rank, tuple(n for n in LINEARS if n in names) + tuple(sorted(names - set(LINEARS)))


def _has_four_bit_weights(model: torch.nn.Module) -> bool:
    return any(getattr(p, "quant_state", None) is not None for p in model.parameters())


def estimated_method(model: torch.nn.Module) -> str:
    """The estimator's method for a prepared model: full when every weight trains, qlora or lora
    when LoRA layers train (on 4-bit weights or not), else peft (a frozen base)."""
    trainable, total = count_params(model)
    if trainable == total:
        return "full"
    if lora_layout(model) is None:
        return "peft"
    return "qlora" if _has_four_bit_weights(model) else "lora"


def setup_for(
    model: torch.nn.Module,
    method: str | None = None,
    batch: int = 1,
    seq_len: int = 512,
    compute_dtype: str | None = None,
) -> TrainingSetup:
    """How `model`, as `apply_method(model, method)` prepared it, trains, for the estimator: the
    estimator's own method where it has one (read off the model when `method` is None), with
    LoRA's rank and targets as the model has them; else a frozen base with the measured
    trainable share and backward depth. `compute_dtype`: "bf16" under bf16 autocast."""
    as_ = ESTIMATED_AS.get(method, "peft") if method else estimated_method(model)
    trainable, total = count_params(model)
    if as_ == "full" and trainable < total:  # e.g. full fine-tuning with frozen embeddings
        as_ = "peft"
    arch = Architecture.from_config(model.config)  # the base: added weights are not in its count
    rank, targets = lora_layout(model) or (8, "all-linear")
    own = as_ in ("full", "lora", "qlora")
    trained_linear = any(
        p.requires_grad and _LINEAR_WEIGHT.search(n) for n, p in model.named_parameters()
    )
    dora = any(_DORA_MAGNITUDE in n for n, p in model.named_parameters() if p.requires_grad)
    return TrainingSetup(
        method=as_,
        dora=dora and as_ in ("lora", "qlora"),
        rank=rank,
        targets=targets,
        trainable_fraction=None if own else trainable / arch.n_params,
        batch=batch,
        seq_len=seq_len,
        compute_dtype=compute_dtype or ("fp32" if as_ == "qlora" else None),
        backprop_layers=None if own else backprop_layers_of(model),
        frozen_linears=as_ == "peft" and not trained_linear,
        added_weights=total > arch.n_params,  # selective methods train the base's own weights
    )
