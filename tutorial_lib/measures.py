"""Statistics on paired outcomes: what changed between two measurements of the same items.

Pure arithmetic, no model: items lost and gained with an exact sign test on them (McNemar's
exact test), the mean shift of paired values with its standard error, and a seeded bootstrap over
items (or passages) for a ratio of sums such as a change in cross-entropy per token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

BOOTSTRAP_SAMPLES = 2000
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


@dataclass(frozen=True)
class Estimate:
    """A number with its uncertainty: standard error and 95 % interval, None where one sample
    cannot give an error estimate (e.g. a change measured on one passage)."""

    value: float
    stderr: float | None = None
    ci95: tuple[float, float] | None = None
    n: int = 0  # the independent units it was estimated from (items, passages)

    def __post_init__(self) -> None:
        if self.stderr is not None and self.stderr < 0:
            raise ValueError(f"a standard error is >= 0, got {self.stderr}")
        if self.ci95 is not None and not self.ci95[0] <= self.ci95[1]:
            raise ValueError(f"a 95 % interval runs low to high, got {self.ci95}")

    def text(self, digits: int = 3, unit: str = "") -> str:
        """`+0.012 ± 0.004` (or `+0.012, no error estimate (1 passage)`), as reports print it."""
        unit = f" {unit}" if unit else ""
        if self.stderr is None:
            return f"{self.value:+.{digits}f}{unit}, no error estimate ({_units(self.n)})"
        return f"{self.value:+.{digits}f} ± {self.stderr:.{digits}f}{unit}"


def _units(n: int) -> str:
    return f"{n} passage" if n == 1 else f"{n} passages"


@dataclass(frozen=True)
class Flips:
    """Items right before and wrong after (lost), and wrong before and right after (gained)."""

    lost: int
    gained: int
    n_items: int
    lost_ids: list[str] = field(default_factory=list)
    gained_ids: list[str] = field(default_factory=list)

    @property
    def net(self) -> int:
        """Gained minus lost: the change in the number of items answered right."""
        return self.gained - self.lost

    @property
    def p_value(self) -> float:
        """Two-sided exact sign test on the flips (`sign_test_p`)."""
        return sign_test_p(self.lost, self.gained)


def flips(
    before_correct: Sequence[bool],
    after_correct: Sequence[bool],
    ids: Sequence[str] | None = None,
) -> Flips:
    """Count the items lost and gained between two scorings of the same items (ids, if given,
    name which ones)."""
    if len(before_correct) != len(after_correct):
        raise ValueError(
            f"before and after score different numbers of items: "
            f"{len(before_correct)} and {len(after_correct)}"
        )
    if ids is not None and len(ids) != len(before_correct):
        raise ValueError(f"{len(ids)} ids for {len(before_correct)} items")
    names = list(ids) if ids is not None else [str(i) for i in range(len(before_correct))]
    pairs = list(zip(names, before_correct, after_correct))
    lost = [name for name, b, a in pairs if b and not a]
    gained = [name for name, b, a in pairs if a and not b]
    return Flips(
        len(lost),
        len(gained),
        len(pairs),
        lost if ids is not None else [],
        gained if ids is not None else [],
    )


def flips_by_task(outcomes: Mapping[str, tuple[Sequence[bool], Sequence[bool]]]) -> dict:
    """`flips` for each task of a mapping task -> (before_correct, after_correct)."""
    return {task: flips(before, after) for task, (before, after) in outcomes.items()}


def sign_test_p(lost: int, gained: int) -> float:
    """Exact two-sided sign test (McNemar's exact test) on the discordant pairs: the chance, if
    losing and gaining an item were equally likely, of a split at least this uneven.

    11 lost and 1 gained: 2 * (C(12,0) + C(12,1)) / 2**12 = 26 / 4096 = 0.0063.
    """
    if lost < 0 or gained < 0:
        raise ValueError(f"counts are >= 0, got lost={lost}, gained={gained}")
    n = lost + gained
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(lost, gained) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_mean_shift(before: Sequence[float], after: Sequence[float]) -> Estimate:
    """Mean of after − before over paired values, with its standard error (sample standard
    deviation of the differences over √n) and a normal 95 % interval; no error from one pair."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} values before but {len(after)} after")
    if not before:
        raise ValueError("no values to compare")
    diffs = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    mean, n = float(diffs.mean()), len(diffs)
    if n == 1:
        return Estimate(mean, None, None, n)
    stderr = float(diffs.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, stderr, (mean - Z95 * stderr, mean + Z95 * stderr), n)


def bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> Estimate:
    """Σ numerators / Σ denominators, with a bootstrap over the units (resampled with
    replacement, `samples` times, seeded): its standard error and percentile 95 % interval.

    Per passage, numerator = summed change in cross-entropy and denominator = tokens gives the
    change in nats per token with passages as the independent units; no error from one unit.
    """
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"{num.size} numerators but {den.size} denominators")
    if not num.size:
        raise ValueError("no units to estimate from")
    if den.sum() <= 0 or (den < 0).any():
        raise ValueError("denominators must be >= 0 with a positive sum")
    value, n = float(num.sum() / den.sum()), num.size
    if n == 1:
        return Estimate(value, None, None, n)
    picks = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    ratios = num[picks].sum(1) / np.maximum(den[picks].sum(1), np.finfo(float).tiny)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return Estimate(value, float(ratios.std(ddof=1)), (float(low), float(high)), n)


def bootstrap_difference(
    before: Sequence[float], after: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> Estimate:
    """Mean of after − before over paired units, with a bootstrap over the units."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} values before but {len(after)} after")
    diffs = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    return bootstrap_ratio(diffs, np.ones_like(diffs), samples, seed)
