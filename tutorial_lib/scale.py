"""Does the toy predict the big? Lesson 07's comparison set beside the same study at larger budgets.

Each budget ("1×", "4×", "16×") is one `compare.Comparison`; only the methods a pair of budgets
share are compared. Per budget and method (`Budget.rows`): recall, MC accuracy, ΔCE, KL, the
suite drop over the tasks above chance (`rank_agreement.suite_drop`), the floor's ΔCE, cost.

**Errors.** A method with two or more seeds: the mean's standard error over seeds (sd/√n). One
seed: that run's own measurement error (`<key>_stderr`; binomial for MC; the suite tasks'
errors combined), which leaves the seed's spread out. `seed_spread` measures that spread where
there are seeds (a method's sd over seeds against its runs' own error, the median over methods);
`widening` turns it into a factor, √(1 + ratio²), that a one-seed budget's errors can be
multiplied by (`Budget(..., widen=...)`) to ask whether a verdict survives it. A difference of
two methods is paired over their shared seeds where they share two or more (the same data order
per seed), else the two errors combined as independent.

**Rank agreement** (`rank_between`): Kendall's τ-b of the methods' means at two budgets, with a
95 % interval bootstrapped over *seeds* (each method's seeds resampled at each budget) when
every method has two or more seeds at both, else over *methods* (`rank_agreement`); "se_null"
is τ's standard error for independent orders, √(2(2n+5) / 9n(n−1)), about 0.3 for 7 methods.
Beside it, `pairwise`: for each method pair, the same order at both budgets or not, and whether
each order is beyond 2 of its errors.

Lesson 07's verdicts at each budget, and the whole study: `tutorial_lib.verdicts`.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from tutorial_lib.compare import Comparison, is_floor
from tutorial_lib.rank_agreement import bootstrap_interval, kendall_tau, suite_drop
from tutorial_lib.rank_agreement import tasks_above_chance as _above_chance
from tutorial_lib.sweeps import read_cache

BUDGETS = {"1×": "compare-lesson", "4×": "compare-4x", "16×": "compare-16x"}  # file stems
MEASURES = {  # name: the record's key (the suite drop is computed from the suite's tasks)
    "recall": "domain_recall_after",
    "mc": "domain_accuracy_after",
    "ce": "general_ce_change",  # ΔCE on general text: forgetting
    "kl": "kl_to_base",
    "suite_drop": "suite_drop",
}
HEADLINE = ("full", "lora", "qlora", "adapter", "ia3", "ln-tuning", "top-layers")
PEFT = HEADLINE[1:]


@dataclass(frozen=True)
class Estimate:
    """A method's mean over seeds, their sd (None for one), and the mean's standard error."""

    mean: float | None
    sd: float | None
    se: float | None
    n: int
    how: str  # "seeds", "one run's measurement error", or "no finished run"


def from_runs(path: str | Path) -> Comparison:
    """A comparison read back from `tutorial-lib compare`'s runs cache (JSONL) without training:
    every cached run, floors apart, at the automatic target (as `compare.compare` returns)."""
    results = [row["result"] for row in read_cache(Path(path)).values()]
    floors = [r for r in results if is_floor(r)]
    return Comparison.of([r for r in results if not is_floor(r)], None, floors)


class Budget:
    """One budget's comparison, read per method and measure (finished runs only)."""

    def __init__(
        self,
        name: str,
        comparison: Comparison,
        tasks: tuple[str, ...] | None = None,
        widen: dict[str, float] | None = None,
    ):
        """`widen`: per measure, a factor for a one-seed method's own error (`widening`)."""
        self.name, self.comparison, self.widen = name, comparison, dict(widen or {})
        done = [r for r in comparison.records if "error" not in r]
        self.tasks = tasks if tasks is not None else _tasks(done)
        self.runs: dict[str, dict[int, dict]] = {}
        for r in done:
            self.runs.setdefault(r["method"], {})[r["seed"]] = r
        self.floors: dict[str, dict] = {}
        for f in (f for f in comparison.floors if "error" not in f):
            if f["method"] in self.floors:  # one control per method, or which is its floor?
                steps = [self.floors[f["method"]].get("steps"), f.get("steps")]
                raise ValueError(f"{name}: {f['method']} has two noise floors (steps {steps})")
            self.floors[f["method"]] = f

    @property
    def methods(self) -> list[str]:
        return list(self.runs)

    def restricted(self, methods: list[str]) -> Budget:
        """This budget with only `methods`' runs and floors."""
        keep = lambda rows: [r for r in rows if r["method"] in methods]  # noqa: E731
        c = self.comparison
        kept = Comparison(keep(c.records), c.target, keep(c.floors))
        return Budget(self.name, kept, self.tasks, self.widen)

    def value(self, run: dict, measure: str) -> float | None:
        if measure == "suite_drop":
            return suite_drop(run, self.tasks)
        return run.get(MEASURES.get(measure, measure))

    def seeds(self, method: str, measure: str) -> dict[int, float]:
        runs = self.runs.get(method, {}).items()
        values = {s: self.value(r, measure) for s, r in runs}
        return {s: v for s, v in values.items() if v is not None}

    def run_se(self, run: dict, measure: str) -> float | None:
        """One run's measurement error of `measure` (None where it recorded none)."""
        key = MEASURES.get(measure, measure)
        if measure == "suite_drop":
            se = run.get("suite_change_stderr") or {}
            if not self.tasks or any(t not in se for t in self.tasks):
                return None
            return math.sqrt(sum(se[t] ** 2 for t in self.tasks)) / len(self.tasks)
        if measure == "mc":
            p, n = run.get(key), run.get("domain_n_items")
            return math.sqrt(p * (1 - p) / n) if p is not None and n else None
        return run.get(f"{key}_stderr")

    def estimate(self, method: str, measure: str) -> Estimate:
        values = self.seeds(method, measure)
        if not values:
            return Estimate(None, None, None, 0, "no finished run")
        if len(values) == 1:
            seed, v = next(iter(values.items()))
            se, factor = self.run_se(self.runs[method][seed], measure), self.widen.get(measure)
            if se is None or not factor:
                return Estimate(v, None, se, 1, "one run's measurement error")
            return Estimate(v, None, se * factor, 1, f"one run's error × {factor:.2f}")
        sd = statistics.stdev(values.values())
        mean = statistics.fmean(values.values())
        return Estimate(mean, sd, sd / math.sqrt(len(values)), len(values), "seeds")

    def difference(
        self, measure: str, a: str, b: str, other: str | None = None
    ) -> tuple[float | None, float | None, str]:
        """`measure` of a minus b's (`other` measure of b's if given) with its error: paired
        over 2+ shared seeds, else the two errors as independent."""
        other = other or measure
        va, vb = self.seeds(a, measure), self.seeds(b, other)
        shared = sorted(va.keys() & vb.keys())
        if len(shared) > 1:
            d = [va[s] - vb[s] for s in shared]
            se = statistics.stdev(d) / math.sqrt(len(d))
            return statistics.fmean(d), se, f"paired over {len(d)} seeds"
        ea, eb = self.estimate(a, measure), self.estimate(b, other)
        if ea.mean is None or eb.mean is None:
            return None, None, "not measured"
        se = None if ea.se is None or eb.se is None else math.hypot(ea.se, eb.se)
        return ea.mean - eb.mean, se, "independent"

    def rows(self) -> list[dict]:
        """Per method: each measure's estimate, the floor's ΔCE, cost, and the load it ran under."""
        out = []
        for method, runs in self.runs.items():
            row: dict = {"method": method, "seeds": sorted(runs)}
            for measure in MEASURES:
                e = self.estimate(method, measure)
                row[measure] = {"mean": e.mean, "sd": e.sd, "se": e.se, "n": e.n, "how": e.how}
            floor = self.floors.get(method, {})
            row["floor_ce"], row["floor_steps"] = floor.get("general_ce_change"), floor.get("steps")
            for key in ("sec_per_step", "peak_memory_bytes", "trainable_params"):
                got = [r[key] for r in runs.values() if r.get(key) is not None]
                row[key] = statistics.fmean(got) if got else None
            loads = [r["load_average"] for r in runs.values() if r.get("load_average")]
            row["max_load_average"] = max(loads) if loads else None
            out.append(row)
        return out


def seed_spread(b: Budget, measure: str) -> float | None:
    """How far seeds spread beside a run's own error: per method with 2+ seeds, its sd over seeds
    over the mean of its runs' own errors; the median over methods (None where none has both)."""
    ratios = []
    for method, runs in b.runs.items():
        e = b.estimate(method, measure)
        own = [b.run_se(r, measure) for r in runs.values()]
        if e.sd is not None and own and all(own):
            ratios.append(e.sd / statistics.fmean(own))
    return statistics.median(ratios) if ratios else None


def widening(spreads: dict[str, float | None]) -> dict[str, float]:
    """Per measure, the factor √(1 + ratio²) for one seed's error, the seeds' spread (`ratio`
    × a run's own error) added to it as an independent part."""
    return {m: math.sqrt(1 + r**2) for m, r in spreads.items() if r is not None}


def _tasks(done: list[dict]) -> tuple[str, ...]:
    """The suite tasks above chance for the base (the same for every run of a comparison)."""
    with_suite = [r for r in done if r.get("suite_accuracy_before")]
    return _above_chance(with_suite[0]) if with_suite else ()


def shared_methods(a: Budget, b: Budget, measure: str) -> list[str]:
    """Methods measured at both budgets, in `a`'s order."""
    return [m for m in a.methods if a.seeds(m, measure) and b.seeds(m, measure)]


def strength(margin: float | None, se: float | None) -> str | None:
    if margin is None:
        return None
    if se is None or abs(margin) <= 2 * se:
        return "within"
    return "for" if margin > 0 else "against"


def pairwise(a: Budget, b: Budget, measure: str) -> list[dict]:
    """For each method pair both budgets measured: the difference at each, whether the order is
    the same, and whether each order is beyond 2 of its errors."""
    rows = []
    for x, y in combinations(shared_methods(a, b, measure), 2):
        (da, sa, _), (db, sb, _) = a.difference(measure, x, y), b.difference(measure, x, y)
        same = (da > 0) == (db > 0) if da and db else None  # None: a tie at either
        rows.append(
            {"pair": f"{x} − {y}", "a": da, "a_se": sa, "b": db, "b_se": sb, "same_order": same}
            | {"a_beyond": strength(da, sa) != "within", "b_beyond": strength(db, sb) != "within"}
        )
    return rows


def rank_between(a: Budget, b: Budget, measure: str, draws: int = 1000, seed: int = 0) -> dict:
    """Kendall's τ-b of the shared methods' means at `a` and `b`, its 95 % interval (bootstrap
    over seeds where every method has 2+ at both, else over methods), and the pair counts."""
    methods = shared_methods(a, b, measure)
    n = len(methods)
    pairs = pairwise(a, b, measure)
    opposite = [p for p in pairs if p["same_order"] is False]
    out = {"measure": measure, "methods": methods, "n": n, "pairs": pairs}
    out |= {"same_order": sum(p["same_order"] is True for p in pairs)}
    out |= {"opposite_order": len(opposite)}
    out |= {"opposite_beyond_both": sum(p["a_beyond"] and p["b_beyond"] for p in opposite)}
    if n < 3:
        return out | {"tau": None, "ci95": None, "se_null": None, "bootstrap": f"{n} methods"}
    xa = [a.estimate(m, measure).mean for m in methods]
    xb = [b.estimate(m, measure).mean for m in methods]
    se_null = math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    by_seeds = all(len(a.seeds(m, measure)) > 1 and len(b.seeds(m, measure)) > 1 for m in methods)
    if by_seeds:
        rng, taus = random.Random(seed), []
        for _ in range(draws):
            ra = [_resampled_mean(a.seeds(m, measure), rng) for m in methods]
            rb = [_resampled_mean(b.seeds(m, measure), rng) for m in methods]
            taus.append(kendall_tau(ra, rb))
        taus = sorted(t for t in taus if not math.isnan(t)) or [math.nan]
        ci = (taus[int(0.025 * (len(taus) - 1))], taus[int(0.975 * (len(taus) - 1))])
    else:
        ci = bootstrap_interval(xa, xb, kendall_tau, draws=draws, seed=seed)
    how = "seeds" if by_seeds else "methods"
    return out | {"tau": kendall_tau(xa, xb), "ci95": ci, "se_null": se_null, "bootstrap": how}


def _resampled_mean(values: dict[int, float], rng: random.Random) -> float:
    v = list(values.values())
    return statistics.fmean(rng.choice(v) for _ in v)
