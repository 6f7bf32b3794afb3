"""Additive methods: the base stays frozen and new, small weights are added and trained.

Ours (`adapter`, `bias-added`; `prompt-scratch` in prompts.py) are written to be read in a
lesson; peft's (`ia3`; `prompt-tuning`, `prefix-tuning` in prompts.py) are for practice.
Each of our modules has an `enabled` switch so `base.adapters_disabled` can measure the
base with the method off, as peft's `disable_adapter` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tutorial_lib.methods.base import Switchable, decoder_layers, freeze
from tutorial_lib.methods.registry import register


def _like(module: nn.Module, reference: torch.Tensor) -> nn.Module:
    """New weights go where the base weights are, in their dtype."""
    return module.to(device=reference.device, dtype=reference.dtype)


# --- bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) ----------------------------

PLACEMENTS = {"houlsby": ("self_attn", "mlp"), "pfeiffer": ("mlp",)}  # which sub-layers get one


@dataclass
class AdapterConfig:
    """A bottleneck adapter after some sub-layers of every block."""

    bottleneck: int = 16  # b: the adapter squeezes hidden size d down to b and back
    placement: str = "pfeiffer"  # "pfeiffer": after the MLP; "houlsby": after attention and MLP

    def __post_init__(self) -> None:
        if not isinstance(self.bottleneck, int) or self.bottleneck <= 0:
            raise ValueError(f"bottleneck must be a positive integer, got {self.bottleneck!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"placement must be one of {sorted(PLACEMENTS)}, got {self.placement!r}"
            )


class BottleneckAdapter(nn.Module):
    """h + up(relu(down(h))): `up` starts at zero, so the adapter starts as the identity."""

    def __init__(self, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)  # d -> b
        self.up = nn.Linear(bottleneck, hidden)  # b -> d
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.relu(self.down(h)))  # (B, T, d)


class WithAdapter(Switchable):
    """Run a sub-layer, then the adapter on its output (attention returns a tuple: adapt item 0)."""

    def __init__(self, sublayer: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.sublayer, self.adapter = sublayer, adapter

    def forward(self, *args: Any, **kwargs: Any):
        out = self.sublayer(*args, **kwargs)
        if not self.enabled:
            return out
        if isinstance(out, tuple):  # (attention output, attention weights)
            return (self.adapter(out[0]), *out[1:])
        return self.adapter(out)


@register(
    "adapter",
    "additive",
    AdapterConfig,
    default_lr=1e-2,  # measured best, lesson 03 (benchmarks/results/learning-rates.json)
    description="bottleneck adapters after the MLP (pfeiffer) or attention and MLP (houlsby)",
)
def apply_adapter(model, config: AdapterConfig):
    """Freeze the base and wrap each chosen sub-layer with a fresh adapter."""
    freeze(model)
    hidden = model.config.hidden_size
    reference = model.get_input_embeddings().weight
    for layer in decoder_layers(model):
        for name in PLACEMENTS[config.placement]:
            adapter = _like(BottleneckAdapter(hidden, config.bottleneck), reference)
            setattr(layer, name, WithAdapter(getattr(layer, name), adapter))
    return model


# --- added biases: "BitFit" for models that have no biases (additive, not selective) ------------


@dataclass
class BiasAddedConfig:
    """No knobs: every linear layer inside the decoder blocks gets a bias (not the output head)."""


class WithBias(Switchable):
    """A frozen linear layer plus a trainable bias that starts at zero."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        w = linear.weight
        self.bias = nn.Parameter(torch.zeros(w.shape[0], device=w.device, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + self.bias if self.enabled else y


@register(
    "bias-added",
    "additive",
    BiasAddedConfig,
    default_lr=1e-2,  # the fair-rate sweep's choice (benchmarks/results/rate-sweep.json)
    description="ADDITIVE, not selective: add zero biases to every linear layer, train only them",
)
def apply_bias_added(model, config: BiasAddedConfig):
    """BitFit's idea for a model without biases: add them (so this method adds weights)."""
    freeze(model)
    for layer in decoder_layers(model):
        linears = [(n, m) for n, m in layer.named_modules() if isinstance(m, nn.Linear)]
        for name, linear in linears:
            parent, _, child = name.rpartition(".")
            setattr(layer.get_submodule(parent) if parent else layer, child, WithBias(linear))
    return model


# --- (IA)^3 (Liu et al. 2022), through peft ---------------------------------------------------


@dataclass
class IA3MethodConfig:
    """(IA)^3: learned per-channel scales on keys, values and the MLP's down-projection input."""

    target_modules: list[str] | None = None  # None: peft's default for the architecture
    feedforward_modules: list[str] | None = None  # which targets are scaled on their input

    def __post_init__(self) -> None:
        if self.feedforward_modules and self.target_modules is None:
            raise ValueError("feedforward_modules must be a subset of target_modules: give both")
        extra = set(self.feedforward_modules or []) - set(self.target_modules or [])
        if extra:
            raise ValueError(f"feedforward_modules {sorted(extra)} are not in target_modules")


@register(
    "ia3",
    "additive",
    IA3MethodConfig,
    default_lr=1e-1,  # measured best, lesson 03 (benchmarks/results/learning-rates.json)
    description="learned scaling vectors on keys, values and MLP activations (peft)",
)
def apply_ia3(model, config: IA3MethodConfig):
    """peft (IA)^3; the scales start at one, so the model starts as the base."""
    from peft import IA3Config, get_peft_model

    peft_config = IA3Config(
        task_type="CAUSAL_LM",
        target_modules=config.target_modules,
        feedforward_modules=config.feedforward_modules,
    )
    return get_peft_model(model, peft_config)
