"""Which layers matter: sweeps over a method's structure (how many blocks, which ones), not its rate.

A learning-rate sweep varies a number; these sweeps vary the method's config (`top-layers` k,
`chosen-layers` layers). Their configs (`top_layers`, `one_block`) and `by_variant`, which makes
each config its own row in `results.matched_table`, live with the sweeps (`sweeps`; lesson 04's
text still names `depth.one_block` and `depth.by_variant`, so those two resolve here too); this
module plots a one-block-at-a-time sweep against the block's depth (`by_depth`).
"""

from __future__ import annotations

from tutorial_lib import plots
from tutorial_lib.sweeps import by_variant, method_fields, one_block  # noqa: F401 (lesson 04's text)

__all__ = ["by_depth", "by_variant", "depth", "one_block"]


def depth(run: dict) -> int:
    """The one block a `chosen-layers` run trained, counted from the input (0)."""
    layers = method_fields(run).get("layers")
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
