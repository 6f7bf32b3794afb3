"""LoRA: W stays frozen and a low-rank update ΔW = B·A of rank r trains (lesson 05).

`lora` and `dora` are peft's; `lora-scratch` is ours, written to be read in the lesson and
tested equal to peft's (outputs, gradients, merging). One config serves all three.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tutorial_lib.methods.base import Switchable, freeze
from tutorial_lib.methods.registry import register

# peft 0.21 calls a transformers method that transformers 5 deprecates; nothing for a learner to do.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class LoraMethodConfig:
    """LoRA's knobs; the essay's advice is to start at r = 8 or 16."""

    r: int = 8  # rank of the update B·A
    alpha: float = 16  # the update is scaled by alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.0  # dropout on the LoRA input; 0 keeps short runs deterministic and fast
    target_modules: str | list[str] = "all-linear"  # "all-linear", module names, or a regex
    rslora: bool = False  # rank-stabilised LoRA (Kalajdzievski 2023): scale by alpha / sqrt(r)

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"r must be a positive integer (e.g. 8 or 16), got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.rslora, bool):
            raise ValueError(f"rslora must be True or False, got {self.rslora!r}")

    @property
    def scaling(self) -> float:
        """What B·A is multiplied by: without it, changing r would change the learning rate."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


def _check_targets(model, targets: str | list[str]) -> None:
    """Reject a target name that matches no module, before peft's less direct error."""
    if isinstance(targets, str):
        return  # "all-linear" or a regex: peft resolves it
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        )
        raise ValueError(
            f"unknown target module(s) {unknown}; this model's linear layers: {linear}"
        )


def _peft_lora(model, config: LoraMethodConfig, use_dora: bool = False):
    """The model wrapped by peft with LoRA (or DoRA) adapters; only the adapters require grad."""
    from peft import LoraConfig, get_peft_model

    _check_targets(model, config.target_modules)
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        use_rslora=config.rslora,
        use_dora=use_dora,
    )
    return get_peft_model(model, peft_config)


@register(
    "lora",
    "reparameterization",
    LoraMethodConfig,
    default_lr=3e-3,
    description="low-rank update B·A on every linear layer (peft)",
)
def apply_lora(model, config: LoraMethodConfig):
    """peft's LoRA: the workhorse."""
    return _peft_lora(model, config)


@register(
    "dora",
    "reparameterization",
    LoraMethodConfig,
    default_lr=3e-3,  # provisional: LoRA's rate, until lesson 05 measures DoRA's
    description="LoRA on the direction of W plus a trained magnitude per output (peft use_dora)",
)
def apply_dora(model, config: LoraMethodConfig):
    """peft's DoRA (Liu et al. 2024): W = m · (W0 + B·A) / ||W0 + B·A||, m trains too."""
    return _peft_lora(model, config, use_dora=True)


# --- LoRA from scratch (Hu et al. 2021) -------------------------------------------------------


class LoraLinear(Switchable):
    """y = W x + scaling · B A dropout(x), with W frozen: only A (r, d_in) and B (d_out, r) train.

    B starts at zero, so the layer starts as W alone; A starts as nn.Linear's (and peft's)
    default init, so the first steps move B in a random low-rank subspace.
    """

    def __init__(self, base: nn.Linear, r: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        w = base.weight  # (d_out, d_in)
        self.lora_A = nn.Parameter(torch.empty(r, w.shape[1], device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(w.shape[0], r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = scaling  # alpha / r, or alpha / sqrt(r) with rsLoRA
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False  # True while ΔW sits inside W (merge)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B·A, the (d_out, d_in) update that training learns, at rank <= r."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged and not self.enabled:
            self.unmerge()  # switched off means W alone (peft does the same)
        y = self.base(x)  # (B, T, d_out)
        if self.merged or not self.enabled:
            return y
        # Two thin matmuls, never the d_out x d_in product: x A^T is (B, T, r).
        return y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into W: one matmul per layer again, so no latency is added at inference."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take ΔW out of W again (exact up to float rounding: (W + ΔW) − ΔW need not be W)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def is_target(name: str, module: nn.Module, targets: str | list[str], head: nn.Module) -> bool:
    """peft's target rule: "all-linear" is every nn.Linear but the output head; a list names
    modules by their last part ("q_proj"); any other string is a regex on the full name."""
    if not isinstance(module, nn.Linear):
        return False
    if targets == "all-linear":
        return module is not head
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name.rsplit(".", 1)[-1] in targets


def inject_lora(model, config: LoraMethodConfig) -> list[str]:
    """Freeze the model and wrap each target linear layer in a LoraLinear; returns their names."""
    _check_targets(model, config.target_modules)
    freeze(model)
    head = model.get_output_embeddings()
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if is_target(name, module, config.target_modules, head)
    ]
    for name, linear in chosen:
        parent, _, child = name.rpartition(".")
        wrapped = LoraLinear(linear, config.r, config.scaling, config.dropout)
        setattr(model.get_submodule(parent), child, wrapped)
    if not chosen:
        raise ValueError(f"target_modules {config.target_modules!r} matched no linear layer")
    return [name for name, _ in chosen]


@register(
    "lora-scratch",
    "reparameterization",
    LoraMethodConfig,
    default_lr=3e-3,  # peft's lora rate: the same method, so the same rate
    description="LoRA written here (LoraLinear), tested equal to peft's",
)
def apply_lora_scratch(model, config: LoraMethodConfig):
    """Our LoRA layers in place of the target nn.Linear modules; the model keeps its class."""
    inject_lora(model, config)
    return model
