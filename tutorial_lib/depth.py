"""Which layers matter: sweeps over a method's structure (how many blocks, which ones), not its rate.

A learning-rate sweep varies a number; these sweeps vary the method's config (`top-layers` k,
`chosen-layers` layers). Three small helpers keep such sweeps in the library's usual shape:
`configured` lets a cached sweep (`forgetting.run_sweep`, JSON configs) name a config by its
fields (`top_layers` and `one_block` write such configs), `by_variant` makes each config its own
row in `forgetting.matched_table`, and `by_depth` plots a one-block-at-a-time sweep against the
block's depth.
"""

from __future__ import annotations

from collections.abc import Callable

from tutorial_lib import plots
from tutorial_lib.methods import get_method


def configured(run: Callable[..., dict]) -> Callable[..., dict]:
    """`run` (e.g. a partial of `experiment.summarised_run`) that takes the method's config as
    plain fields, `method_fields={"k": 4}`, so every sweep config stays JSON and can be cached."""

    def wrapped(method: str, method_fields: dict | None = None, **kwargs) -> dict:
        config = None if method_fields is None else get_method(method).config_cls(**method_fields)
        return run(method=method, method_config=config, **kwargs)

    return wrapped


def top_layers(k: int, lr: float) -> dict:
    """A `run_sweep` config training the last k blocks; one (k, rate) is one label, trained once."""
    return {
        "label": f"top-layers k={k}, lr {lr:.2g}",
        "group": "top-layers",
        "method": "top-layers",
        "method_fields": {"k": k},
        "lr": lr,
    }


def one_block(block: int, lr: float) -> dict:
    """A `run_sweep` config training only `block` (0 = input side), for `by_depth`."""
    return {
        "label": f"block {block}",
        "group": "one block",
        "method": "chosen-layers",
        "method_fields": {"layers": [block]},  # a list: the sweep's configs are JSON
        "lr": lr,
    }


def _fields(run: dict) -> dict:
    """A run summary's method config, as stored with it (`RunSpec.to_dict`); {} for none."""
    return (run.get("spec") or {}).get("method_config") or {}


def variant(run: dict) -> str:
    """A run's method and config: "top-layers k=4", "chosen-layers layers=9", "ln-tuning"."""

    def text(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return " ".join([run["method"], *(f"{k}={text(v)}" for k, v in _fields(run).items())])


def by_variant(runs: list[dict]) -> list[dict]:
    """Copies of `runs` whose "method" is their `variant`, so that `forgetting.best_per_method`
    and `matched_table` treat each config as its own method: two values of k at one learning
    rate are two methods, not two points on one method's learning-rate path."""
    return [{**run, "method": variant(run)} for run in runs]


def depth(run: dict) -> int:
    """The one block a `chosen-layers` run trained, counted from the input (0)."""
    layers = _fields(run).get("layers")
    if run["method"] != "chosen-layers" or layers is None or len(layers) != 1:
        raise ValueError(
            f"{run.get('label', run['method'])!r} is not a one-block chosen-layers run"
        )
    if layers[0] < 0:
        raise ValueError(f"give depths counted from the input (0, 1, ...), got {layers[0]}")
    return layers[0]


def by_depth(runs: list[dict], title: str = "Which block matters: one block trained at a time"):
    """Domain accuracy and probe retention after training one block, against the block's depth.

    Each run is a summary from `experiment.summarised_run` of `chosen-layers` with one layer.
    The dashed line is the base model's domain accuracy; the base's retention is 1 by definition.
    """
    xs = [depth(run) for run in runs]
    return plots.accuracy_and_retention(runs, xs, "block trained (0 = nearest the input)", title)
