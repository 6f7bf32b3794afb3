"""Selective methods: no new weights, a chosen subset of the existing ones trains.

The choice of subset is the whole method: the last few blocks (top-layers), any chosen blocks
(chosen-layers: which depths matter), the norm gains (ln-tuning) or the bias terms (bitfit).
Llama-family models have no biases, so BitFit refuses them and points to `bias-added`
(methods/additive.py), which adds biases and is labelled additive.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from tutorial_lib.methods.base import decoder_layers, freeze
from tutorial_lib.methods.registry import register

# peft wraps RMSNorm for LN tuning although it only lists LayerNorm as "supported"; the wrapper
# just copies the module, which is all LN tuning needs (tested), so the warning is noise here.
warnings.filterwarnings("ignore", message="Unsupported layer type .*RMSNorm", category=UserWarning)


@dataclass
class TopLayersConfig:
    """Train only the last k decoder blocks (and the final norm that reads their output)."""

    k: int = 2  # SmolLM2-135M has 30 blocks; its tiny test twin has 2

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k <= 0:
            raise ValueError(
                f"k must be a positive integer (1 up to the layer count), got {self.k!r}"
            )


BLOCK_LR = 3e-3  # whole blocks: the fair-rate sweep's choice (benchmarks/results/rate-sweep.json)


@register(
    "top-layers",
    "selective",
    TopLayersConfig,
    default_lr=BLOCK_LR,
    description="train the last k decoder blocks and the final norm; freeze the rest",
)
def apply_top_layers(model, config: TopLayersConfig):
    """Unfreeze the top k blocks: the layers closest to the output adapt most cheaply."""
    layers = decoder_layers(model)
    if config.k > len(layers):
        raise ValueError(
            f"k={config.k} but the model has {len(layers)} decoder layers: choose k in 1..{len(layers)}"
        )
    freeze(model)
    for p in layers[-config.k :].parameters():
        p.requires_grad_(True)
    model.model.norm.requires_grad_(True)
    return model


@dataclass
class ChosenLayersConfig:
    """Train only the decoder blocks at these indices (0 is the first; -1 the last, as in Python)."""

    layers: tuple[int, ...] = (-1,)  # one block alone: the unit of a "which depths matter" sweep

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)  # a list from JSON is accepted, stored as a tuple
        if not self.layers:
            raise ValueError("layers must name at least one decoder block, e.g. (0,) or (-1,)")
        bad = [i for i in self.layers if not isinstance(i, int) or isinstance(i, bool)]
        if bad:
            raise ValueError(f"layers must be integer block indices, got {bad!r}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must not repeat a block, got {self.layers}")


def chosen_indices(n_layers: int, layers: tuple[int, ...]) -> list[int]:
    """The chosen blocks as indices 0..n-1; an error names the allowed range and any block that
    two indices name twice (e.g. 1 and -1 on a 2-block model)."""
    outside = [i for i in layers if not -n_layers <= i < n_layers]
    if outside:
        raise ValueError(
            f"layer index {outside[0]} is out of range: the model has {n_layers} decoder layers, "
            f"so choose from 0..{n_layers - 1} (or -{n_layers}..-1, counting from the top)"
        )
    indices = [i % n_layers for i in layers]
    if len(set(indices)) != len(indices):
        raise ValueError(f"layers {layers} name the same block twice on a {n_layers}-layer model")
    return sorted(indices)


@register(
    "chosen-layers",
    "selective",
    ChosenLayersConfig,
    default_lr=BLOCK_LR,  # the same unit as top-layers (whole blocks), so the same rate
    description="train only the chosen decoder blocks (e.g. one at a time, to see which matter)",
)
def apply_chosen_layers(model, config: ChosenLayersConfig):
    """Unfreeze exactly the chosen blocks, and not the final norm.

    top-layers trains the final norm because its top block feeds it directly. Here the norm stays
    frozen: it would add the same extra freedom, at the output, to every choice of block, and a
    sweep over depths is meant to compare the blocks alone.
    """
    layers = decoder_layers(model)
    indices = chosen_indices(len(layers), config.layers)
    freeze(model)
    for i in indices:
        layers[i].requires_grad_(True)
    return model


@dataclass
class LnTuningConfig:
    """LN tuning has no knobs: every norm's gain trains (2 per block plus the final norm)."""


@register(
    "ln-tuning",
    "selective",
    LnTuningConfig,
    default_lr=1e-2,  # measured best, lesson 04 (benchmarks/results/learning-rates.json)
    description="train only the RMSNorm gains (peft LNTuningConfig)",
)
def apply_ln_tuning(model, config: LnTuningConfig):
    """peft's LN tuning: it trains a copy of each norm, so the original stays for "before"."""
    from peft import LNTuningConfig, get_peft_model

    return get_peft_model(model, LNTuningConfig(task_type="CAUSAL_LM"))


@dataclass
class BitFitConfig:
    """BitFit has no knobs: every existing bias term trains, nothing else."""


def bias_parameters(model) -> list[torch.nn.Parameter]:
    """The model's existing bias terms (Llama-family models have none)."""
    return [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"]


@register(
    "bitfit",
    "selective",
    BitFitConfig,
    default_lr=1e-2,  # provisional (biases are few and start small) until the real-model sweep
    description="train only the existing bias terms (fails on models without biases)",
)
def apply_bitfit(model, config: BitFitConfig):
    """Unfreeze the biases; refuse a model without any rather than train nothing."""
    biases = bias_parameters(model)
    if not biases:
        raise ValueError(
            f"bitfit trains existing bias terms, and this {type(model).__name__} has none "
            "(Llama-family models have no biases). Use 'bias-added' (adds zero-initialised "
            "biases: additive, not selective) or 'ln-tuning' (the norm gains) instead."
        )
    freeze(model)
    for p in biases:
        p.requires_grad_(True)
    return model
