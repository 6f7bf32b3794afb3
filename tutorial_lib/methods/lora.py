"""LoRA through peft: W stays frozen, ΔW = B·A with rank r trains (lesson 05 builds it by hand)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from tutorial_lib.methods import register

# peft 0.21 calls a transformers method that transformers 5 deprecates; nothing for a learner to do.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class LoraMethodConfig:
    """LoRA's knobs; the essay's advice is to start at r = 8 or 16."""

    r: int = 8  # rank of the update B·A
    alpha: int = 16  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the LoRA input; 0 keeps short runs deterministic and fast
    target_modules: str | list[str] = "all-linear"  # which linear layers get an adapter

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive integer (e.g. 8 or 16), got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


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


@register(
    "lora",
    "reparameterization",
    LoraMethodConfig,
    default_lr=3e-3,
    description="low-rank update B·A on every linear layer (peft)",
)
def apply_lora(model, config: LoraMethodConfig):
    """Wrap the model with peft LoRA adapters; only the adapters require grad."""
    from peft import LoraConfig, get_peft_model

    _check_targets(model, config.target_modules)
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
    )
    return get_peft_model(model, peft_config)
