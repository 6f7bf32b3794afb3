"""Full fine-tuning: every weight trains (the costly baseline every other method is held to)."""

from __future__ import annotations

from dataclasses import dataclass

from tutorial_lib.methods.registry import register


@dataclass
class FullConfig:
    """Full fine-tuning has one choice: whether the (tied) embedding matrix trains too."""

    train_embeddings: bool = True  # 28 M of SmolLM2-135M's 135 M parameters sit here

    def __post_init__(self) -> None:
        if not isinstance(self.train_embeddings, bool):
            raise ValueError("train_embeddings must be True or False")


@register(  # the fair-rate sweep's choice (benchmarks/results/rate-sweep.json, rates.RATE_RULE)
    "full", "full", FullConfig, default_lr=3e-4, description="update every weight"
)
def apply_full(model, config: FullConfig):
    """Unfreeze everything (optionally keeping the input embeddings frozen)."""
    for p in model.parameters():
        p.requires_grad_(True)
    if not config.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model
