"""What the method families and the evaluation share: freezing, finding the decoder blocks,
switching our added modules off, eval mode, and telling a model that prepends virtual tokens.

It imports nothing from the package, so any family (and `evaluate`, `scoring`, `train`) can
use it without importing another family.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's decoder blocks, with an error that says which layout is expected."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no `model.layers`: these methods expect a "
            "Llama-family causal LM (e.g. LlamaForCausalLM)"
        )
    return layers


def freeze(model) -> None:
    """Every weight frozen: a selective method then unfreezes only its subset."""
    for p in model.parameters():
        p.requires_grad_(False)


class Switchable(nn.Module):
    """A module that adds to the base model and can be switched off to recover the base."""

    enabled: bool = True


def adapters_disabled(model: torch.nn.Module):
    """Context in which a model behaves as its base: "before" never has an adapter on.

    peft models have `disable_adapter`; our own modules (methods/additive.py) an `enabled`
    switch. Methods that change the base weights in place (full, top-layers, chosen-layers,
    bitfit) cannot be switched off: measure those before applying them.
    """
    disable = getattr(model, "disable_adapter", None)
    if callable(disable):
        return disable()
    switches = [m for m in model.modules() if isinstance(m, Switchable)]
    return _switched_off(switches) if switches else nullcontext()


@contextmanager
def _switched_off(switches: list):
    """Turn our additive modules off, and back to how they were afterwards."""
    states = [m.enabled for m in switches]
    try:
        for m in switches:
            m.enabled = False
        yield
    finally:
        for m, state in zip(switches, states):
            m.enabled = state


@contextmanager
def eval_mode(model: torch.nn.Module):
    """eval() and no_grad for the duration, then restore the model's previous mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def prepends_virtual_tokens(model) -> bool:
    """A peft prompt-learning model (prompt or prefix tuning): it adds virtual tokens inside,
    so positions, caches and logit masks given from outside do not line up with its own."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and config.is_prompt_learning
