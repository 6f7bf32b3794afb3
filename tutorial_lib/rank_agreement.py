"""Do two measures order the same runs the same way? Rank correlations with their uncertainty.

Used where the curriculum asks whether a cheap measure stands in for a dear one (the project's
probe for the published suite, across a comparison's runs) and whether a ranking survives a
change of scale (methods at the lessons' budget and at 4×). With few points a single
coefficient says little, so each comes with a bootstrap interval over the points and the count
of pairs that agree and disagree.
"""

from __future__ import annotations

import math
import random
import statistics


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks (NaN when either side is constant)."""
    _check(x, y)
    return _pearson(ranks(x), ranks(y))


def pair_counts(x: list[float], y: list[float]) -> dict[str, int]:
    """Pairs of points ordered the same way by both measures (concordant), the opposite way
    (discordant), and tied in either."""
    _check(x, y)
    out = {"concordant": 0, "discordant": 0, "tied": 0}
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            s = (x[i] - x[j]) * (y[i] - y[j])
            out["concordant" if s > 0 else "discordant" if s < 0 else "tied"] += 1
    return out


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's τ-b (ties corrected; NaN when either side is constant)."""
    _check(x, y)
    c = pair_counts(x, y)
    tx = sum(1 for i in range(len(x)) for j in range(i + 1, len(x)) if x[i] == x[j])
    ty = sum(1 for i in range(len(y)) for j in range(i + 1, len(y)) if y[i] == y[j])
    n0 = len(x) * (len(x) - 1) // 2
    denominator = math.sqrt((n0 - tx) * (n0 - ty))
    return (c["concordant"] - c["discordant"]) / denominator if denominator else math.nan


def bootstrap_interval(
    x: list[float], y: list[float], statistic=spearman, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95 % percentile interval of `statistic` over points resampled with replacement
    (draws that leave one side constant are skipped)."""
    _check(x, y)
    rng, n, values = random.Random(seed), len(x), []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        value = statistic([x[i] for i in idx], [y[i] for i in idx])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    values.sort()
    return values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]


def agreement(x: list[float], y: list[float], seed: int = 0) -> dict:
    """Spearman's ρ and Kendall's τ-b with bootstrap intervals, and the pair counts."""
    return {
        "n": len(x),
        "spearman": spearman(x, y),
        "spearman_ci95": bootstrap_interval(x, y, spearman, seed=seed),
        "kendall_tau": kendall_tau(x, y),
        "kendall_tau_ci95": bootstrap_interval(x, y, kendall_tau, seed=seed),
        **pair_counts(x, y),
    }


def suite_drop(run: dict, tasks: tuple[str, ...] | None = None) -> float | None:
    """A run's mean accuracy drop over the suite's tasks (before − after; positive is
    forgetting), over `tasks` or every task it measured; None without a suite."""
    before, after = run.get("suite_accuracy_before") or {}, run.get("suite_accuracy_after") or {}
    measured = [t for t in (tasks or before) if t in before and t in after]
    if not measured:
        return None
    return statistics.fmean(before[t] - after[t] for t in measured)


def tasks_above_chance(run: dict, z: float = 2.0) -> tuple[str, ...]:
    """The suite tasks on which a run's model started more than `z` standard errors of guessing
    (sqrt(c(1 − c)/n)) above chance: only they have room to show forgetting. Near-chance tasks
    move by churn alone (lesson 00 measured which are which)."""
    before, chance, n = run["suite_accuracy_before"], run["suite_chance"], run["suite_n_items"]
    return tuple(
        task
        for task in before
        if before[task] - chance[task] > z * math.sqrt(chance[task] * (1 - chance[task]) / n[task])
    )


def probe_vs_suite(records: list[dict], tasks: tuple[str, ...] | None = None) -> dict:
    """How well the probe's forgetting (net items lost, a share) and the general-text ΔCE
    order a comparison's runs as the suite's mean accuracy drop does: `agreement` for each,
    over every finished run with a suite (floors too: they are runs); the points themselves
    under "points" for a plot."""
    points = [
        {
            "method": r["method"],
            "seed": r.get("seed"),
            "floor": r.get("train_on") == "general",
            "probe": r["forgetting"],
            "ce": r["general_ce_change"],
            "suite": drop,
        }
        for r in records
        if "error" not in r and (drop := suite_drop(r, tasks)) is not None
    ]
    if len(points) < 3:
        raise ValueError(f"a rank agreement needs at least 3 runs with a suite; got {len(points)}")
    suite = [p["suite"] for p in points]
    return {
        "probe": agreement([p["probe"] for p in points], suite),
        "ce": agreement([p["ce"] for p in points], suite),
        "tasks": list(tasks) if tasks else "every measured task",
        "points": points,
    }


def _check(x: list[float], y: list[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"the two measures must cover the same points: {len(x)} vs {len(y)}")
    if len(x) < 2:
        raise ValueError(f"a rank correlation needs at least 2 points, got {len(x)}")
