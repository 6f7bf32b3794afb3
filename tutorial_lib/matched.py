"""Matched recall: what a method paid for a given amount of learning, read between real runs.

The one definition every lesson uses:

- **learning** is a run's recall (`RECALL`, or another measure given as `key`);
- **axis** is the knob a method's measured points differ in: the learning rate over a sweep of
  runs (`over_rates`), or the step over one run's trajectory (`over_steps`);
- **target** is a level of learning; `common_target` picks the middle of the range every
  method measured, so each method with two points can bracket it;
- a **matched figure** is every measure linearly interpolated between the two measured points of
  the same method whose learning brackets the target (the first such pair along the axis: the
  gentlest). The base model is never a point (neither lr 0 nor step 0): a line from the base
  assumes the path is straight where nothing was measured, and flatters the gentlest methods.
  A method whose points do not bracket the target has no matched figure, and says why.

Differences between methods carry the standard error of the difference (`difference`): paired
over the items both measured where the points hold per-item values (`<measure>_items`: a dict
of item id -> value), else from the two figures' own standard errors as independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

RECALL = "domain_recall_after"  # a run record's learning measure: recall by generation
AXES = ("lr", "step")


@dataclass(frozen=True)
class Matched:
    """One method's figures at `target` learning, or why it has none (`values` None)."""

    method: str
    axis: str  # "lr" or "step"
    key: str  # the learning measure the target is a level of
    target: float
    values: dict | None = None  # every numeric measure at the target, the axis value included
    between: tuple[float, float] | None = None  # the bracketing points' axis values
    items: dict = field(default_factory=dict)  # measure -> {item id: interpolated value}
    reason: str = ""  # why there is no matched figure

    def stderr(self, measure: str) -> float | None:
        """The figure's standard error (`<measure>_stderr` interpolated; None if not measured)."""
        return (self.values or {}).get(f"{measure}_stderr")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _blend(lo: dict, hi: dict, t: float) -> tuple[dict, dict]:
    """Numbers and per-item values of two points, (1 - t) of `lo` and t of `hi`.

    A standard error blends the same way: exact when the two points' errors move together (the
    same items, the same seed), an upper bound when they are independent."""
    values = {k: lo[k] + t * (hi[k] - lo[k]) for k in lo if _number(lo[k]) and _number(hi.get(k))}
    items = {}
    for k in lo:
        if k.endswith("_items") and isinstance(lo[k], dict) and isinstance(hi.get(k), dict):
            shared = lo[k].keys() & hi[k].keys()
            items[k.removesuffix("_items")] = {
                i: lo[k][i] + t * (hi[k][i] - lo[k][i]) for i in shared
            }
    return values, items


def matched(
    points: list[dict], target: float, axis: str, key: str = RECALL, method: str = ""
) -> Matched:
    """The definition: one method's `points` (dicts with `axis` and `key`) read at `target`."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    measured = sorted(
        (p for p in points if p.get(axis, 0) > 0 and p.get(key) is not None),
        key=lambda p: p[axis],
    )  # the base (axis 0) is never a point
    none = Matched(method, axis, key, target)
    for p in measured:
        if p[key] == target:
            values, items = _blend(p, p, 0.0)
            return Matched(method, axis, key, target, values, (p[axis], p[axis]), items)
    if len(measured) < 2:
        why = f"{len(measured)} measured point(s) besides the base; two must bracket the target"
        return replace(none, reason=why)
    for lo, hi in zip(measured, measured[1:]):
        if (lo[key] - target) * (hi[key] - target) < 0:
            t = (target - lo[key]) / (hi[key] - lo[key])
            values, items = _blend(lo, hi, t)
            return Matched(method, axis, key, target, values, (lo[axis], hi[axis]), items)
    learned = [p[key] for p in measured]
    if max(learned) < target:
        why = f"its {key} stays below the target ({max(learned):.3f} < {target:.3f})"
    else:
        why = (
            f"its lowest {axis} measured already exceeds the target ({min(learned):.3f} > "
            f"{target:.3f}); the base is not used, so a lower {axis} must be measured"
        )
    return replace(none, reason=why)


def over_rates(runs: list[dict], target: float, key: str = RECALL) -> Matched:
    """One method's sweep over learning rates (run records, failed runs left out) at `target`."""
    done = [r for r in runs if "error" not in r]
    methods = {r["method"] for r in done}
    if len(methods) > 1:
        raise ValueError(f"over_rates reads one method's runs; got {sorted(methods)}")
    return matched(done, target, "lr", key, methods.pop() if methods else "")


def over_steps(run: dict, target: float, key: str = "domain_recall") -> Matched:
    """One run's trajectory (its points after step 0) at `target`."""
    return matched(run.get("trajectory", []), target, "step", key, run.get("method", ""))


def by_method(runs: list[dict]) -> dict[str, list[dict]]:
    """Finished run records grouped by method, in the order methods first appear."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if "error" not in run:
            groups.setdefault(run["method"], []).append(run)
    return groups


def learned_methods(
    groups: dict[str, list[dict]], key: str = "domain_recall_change", z: float = 2.0
) -> dict[str, list[dict]]:
    """The methods with a run whose `key` (recall's change from the base) is more than `z` of its
    standard errors above zero: only they can be matched on how much they learned (a method
    that learned nothing would set the target at the base). A run without the error counts
    as not shown to have learned."""

    def rose(run: dict) -> bool:
        change, se = run.get(key), run.get(f"{key}_stderr")
        return change is not None and se is not None and change > z * se

    return {m: g for m, g in groups.items() if any(rose(r) for r in g)}


def common_target(groups: dict[str, list[dict]], key: str = RECALL) -> tuple[float | None, str]:
    """The target: the middle of the learning range every method measured (the highest of the
    methods' lowest points to the lowest of their highest), so that each method with two points
    brackets it. None, with the reason, when the ranges do not overlap."""
    ranges = {}
    for method, points in groups.items():
        learned = [p[key] for p in points if p.get(key) is not None]
        if learned:
            ranges[method] = (min(learned), max(learned))
    if not ranges:
        return None, f"no point measures {key}"
    low = max(lo for lo, _ in ranges.values())
    high = min(hi for _, hi in ranges.values())
    if low >= high:
        return None, f"the methods' measured {key} ranges do not overlap ({low:.3f} >= {high:.3f})"
    return (low + high) / 2, f"the middle of the {key} range every method measured"


def difference(a: Matched, b: Matched, measure: str = "forgetting") -> dict:
    """`measure` of `a` minus that of `b` at their matched target, with the difference's
    standard error; "how" says which: paired over shared items, or independent."""
    out = {"a": a.method, "b": b.method, "measure": measure, "target": a.target}
    if a.target != b.target or a.key != b.key:
        raise ValueError("a difference compares two methods at the same target of the same key")
    if a.values is None or b.values is None:
        missing = a if a.values is None else b
        return out | {"difference": None, "se": None, "how": f"{missing.method}: {missing.reason}"}
    diff = a.values[measure] - b.values[measure]
    per_a, per_b = a.items.get(measure, {}), b.items.get(measure, {})
    shared = sorted(per_a.keys() & per_b.keys())
    if len(shared) > 1:
        d = [per_a[i] - per_b[i] for i in shared]
        mean = sum(d) / len(d)
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / len(d) / len(d))
        return out | {"difference": diff, "se": se, "how": f"paired over {len(shared)} items"}
    se_a, se_b = a.stderr(measure), b.stderr(measure)
    if se_a is None or se_b is None:
        return out | {"difference": diff, "se": None, "how": f"no {measure}_stderr recorded"}
    se = math.hypot(se_a, se_b)
    return out | {"difference": diff, "se": se, "how": "independent: √(se_a² + se_b²)"}


MEASURES = ("forgetting", "retention", "general_ce_after")  # shown by `table` by default


def table(
    runs: list[dict],
    target: float | None = None,
    key: str = RECALL,
    measures: tuple[str, ...] = MEASURES,
):
    """Per method, its sweep over rates read at `target` (default `common_target`): the rates
    that bracket it, each measure there (± its standard error where recorded), or why none."""
    import pandas as pd

    groups = by_method(runs)
    if target is None:
        target, why = common_target(groups, key)
        if target is None:
            raise ValueError(f"no common target: {why}; give one")
    rows = []
    for method, group in groups.items():
        m = over_rates(group, target, key)
        row = {"method": method, f"{key} target": target}
        row["between lr"] = f"{m.between[0]:g}–{m.between[1]:g}" if m.between else None
        for measure in measures:
            row[measure] = m.values.get(measure) if m.values else None
            row[f"{measure} ±"] = m.stderr(measure)
        rows.append(row | {"no matched figure because": m.reason or None})
    return pd.DataFrame(rows).set_index("method")


def at_own_recall(run: dict, key: str = RECALL) -> Matched:
    """A single run read at its own learning: exact, no interpolation (its one measured point)."""
    return matched([run], run[key], "lr", key, run.get("label") or run["method"])


def versus_sweep(
    reference: list[dict],
    runs: list[dict],
    measures: tuple[str, ...] = ("general_ce_change", "forgetting"),
    key: str = RECALL,
):
    """Each run against a reference sweep over rates (e.g. plain full fine-tuning), at the run's
    own recall: the reference is interpolated between its two rates that bracket that recall
    (`over_rates`, never from the base), the run is its own measured point. Per run and measure:
    the run's value, the reference's, the difference ± its standard error (`difference`), or the
    reason there is no matched figure."""
    import pandas as pd

    rows = []
    for run in runs:
        if "error" in run or run.get(key) is None:
            continue
        own = at_own_recall(run, key)
        ref = over_rates(reference, run[key], key)
        ref = replace(ref, method="reference")
        row = {"run": own.method, key: run[key]}
        row["reference between lr"] = (
            f"{ref.between[0]:g}–{ref.between[1]:g}" if ref.between else None
        )
        for measure in measures:
            d = difference(own, ref, measure)
            row[f"{measure} (run)"] = run.get(measure)
            row[f"{measure} (reference)"] = ref.values.get(measure) if ref.values else None
            row[f"{measure} difference"] = d["difference"]
            row[f"{measure} ±"] = d["se"]
        rows.append(row | {"no matched figure because": ref.reason or None})
    if not rows:
        raise ValueError(f"no run measured {key}")
    return pd.DataFrame(rows).set_index("run")
