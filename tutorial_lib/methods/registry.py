"""The method registry: a name, a config dataclass, a default learning rate, and an `apply()`.

Each family module registers its methods here with `@register`; the package's `__init__` imports
the families, so `tutorial_lib.methods.get_method(name)` finds every one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Method:
    """One fine-tuning method as the rest of the library sees it."""

    name: str
    family: str  # full, additive, selective or reparameterization
    config_cls: type
    apply: Callable[[Any, Any], Any]  # (model, config) -> model ready to train
    default_lr: float  # one shared default would silently fail some methods
    description: str


REGISTRY: dict[str, Method] = {}


def register(name: str, family: str, config_cls: type, default_lr: float, description: str):
    """Decorator for a method's apply function."""

    def wrap(apply: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        REGISTRY[name] = Method(name, family, config_cls, apply, default_lr, description)
        return apply

    return wrap


def get_method(name: str) -> Method:
    """The registered method, or an error listing the names that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(sorted(REGISTRY))}"
        ) from None


def apply_method(model, name: str, config: Any = None, seed: int | None = None):
    """Prepare `model` for training with method `name` (default config when none is given).

    Methods draw random initial values (LoRA's A, an adapter's down-projection): pass `seed`
    so that they are the same in every process, not just within one.
    """
    method = get_method(name)
    config = config if config is not None else method.config_cls()
    if not isinstance(config, method.config_cls):
        raise TypeError(f"{name} needs a {method.config_cls.__name__}, got {type(config).__name__}")
    if seed is not None:
        from tutorial_lib.device import set_seed

        set_seed(seed)
    return method.apply(model, config)
