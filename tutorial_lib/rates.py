"""A fair learning rate per method: chosen from a sweep by a rule stated before the sweep.

Choosing each method's rate by its highest domain score pushes the methods that tolerate large
rates to their most aggressive one, and so to more forgetting than the learning needs. The rule
here (`RATE_RULE`) prefers the gentlest rate that learns as much as the sweep can distinguish.
"""

from __future__ import annotations

import math
import statistics

from tutorial_lib.matched import RECALL, by_method

RATE_RULE = (
    "the lowest learning rate whose mean recall over its seeds is within `margin` of the best "
    "rate's, among at least three rates; margin: one standard error of the best rate's recall"
)


def choose_rate(runs: list[dict], margin: float | None = None, key: str = RECALL) -> dict:
    """Each method's default rate by a rule written down before any sweep (`RATE_RULE`): the
    lowest rate whose mean `key` is within `margin` of the best rate's, so a method is not pushed
    to its most aggressive rate for a gain the sweep cannot tell from noise. `margin` defaults
    to one standard error of the best rate's `key` (`<key>_stderr` averaged over its seeds and
    divided by √seeds; else binomial over `domain_n_items`): a smaller margin would let one
    question's luck pick the rate, a fixed one would not shrink as the questions grow.

    Needs three measured rates per method (fewer: ValueError). Returns, per method, the chosen
    rate and the numbers that chose it."""
    chosen = {}
    for method, group in by_method(runs).items():
        rates: dict[float, list[dict]] = {}
        for run in group:
            if run.get(key) is not None:
                rates.setdefault(run["lr"], []).append(run)
        if len(rates) < 3:
            raise ValueError(
                f"{method}: a rate is chosen from at least 3 rates with {key}; got {sorted(rates)}"
            )
        means = {lr: statistics.fmean(r[key] for r in rs) for lr, rs in sorted(rates.items())}
        best = max(means, key=means.get)
        width = margin if margin is not None else _stderr_of_mean(rates[best], key)
        lr = min(r for r, value in means.items() if value >= means[best] - width)
        chosen[method] = {
            "method": method,
            "lr": lr,
            key: means[lr],
            "best_lr": best,
            f"best_{key}": means[best],
            "margin": width,
            "margin_from": "given" if margin is not None else "one standard error of the best",
            "rates": means,
            "rule": RATE_RULE,
        }
    return chosen


def _stderr_of_mean(runs: list[dict], key: str) -> float:
    """The standard error of `key`'s mean over `runs` (seeds of one rate)."""
    errors = [r.get(f"{key}_stderr") for r in runs]
    if all(e is not None for e in errors):
        return statistics.fmean(errors) / math.sqrt(len(runs))
    p, n = statistics.fmean(r[key] for r in runs), sum(r["domain_n_items"] for r in runs)
    return math.sqrt(p * (1 - p) / n)
