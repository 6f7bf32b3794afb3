"""Does the toy predict the big? Lesson 07's comparison set beside the same study at larger budgets.

Each budget ("1×", "4×", "16×") is one `compare.Comparison`; only the methods a pair of budgets
share are compared. Per budget and method (`Budget.rows`): recall, MC accuracy, ΔCE, KL, the
suite drop over the tasks above chance (`rank_agreement.suite_drop`), the floor's ΔCE, cost.

**Errors.** A method with two or more seeds: the mean's standard error over seeds (sd/√n). One
seed: that run's own measurement error (`<key>_stderr`; binomial for MC; the suite tasks'
errors combined), which leaves the seed's spread out. A difference of two methods is paired
over their shared seeds where they share two or more (the same data order per seed), else
the two errors combined as independent.

**Rank agreement** (`rank_between`): Kendall's τ-b of the methods' means at two budgets, with a
95 % interval bootstrapped over *seeds* (each method's seeds resampled at each budget) when
every method has two or more seeds at both, else over *methods* (`rank_agreement`); "se_null"
is τ's standard error for independent orders, √(2(2n+5) / 9n(n−1)), about 0.3 for 7 methods.
Beside it, `pairwise`: for each method pair, the same order at both budgets or not, and whether
each order is beyond 2 of its errors.

**Verdicts** (`VERDICTS`): each is a list of claims, a claim a signed margin (positive = as the
lesson says) with its error. A claim is *for* (margin > 2 se), *against* (margin < −2 se) or
*within*. At a larger budget a claim **holds** when it is for, or within where it was within at
the base too with the same sign; **reverses** when against; **weakens** otherwise. A claim against at the base is
left out (the lesson's data did not support it). A verdict holds when every claim holds,
reverses when any reverses, else weakens. The null verdict (`peft_not_ranked_on_recall`: pairs
that cannot be told apart) counts pairs beyond their errors instead: holds when no more than
at the base, reverses when half or more, else weakens. A "runner-up" claim (`_gap`) is read
against each budget's own runner-up; "untestable": no claim measured at both budgets. Within
errors at both counts as holding: the larger budget is as sure as the lesson's was. Methods
missing are named, never errors.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
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

    def __init__(self, name: str, comparison: Comparison, tasks: tuple[str, ...] | None = None):
        self.name, self.comparison = name, comparison
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
        return Budget(self.name, Comparison(keep(c.records), c.target, keep(c.floors)), self.tasks)

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
            se = self.run_se(self.runs[method][seed], measure)
            return Estimate(v, None, se, 1, "one run's measurement error")
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


def _tasks(done: list[dict]) -> tuple[str, ...]:
    """The suite tasks above chance for the base (the same for every run of a comparison)."""
    with_suite = [r for r in done if r.get("suite_accuracy_before")]
    return _above_chance(with_suite[0]) if with_suite else ()


def shared_methods(a: Budget, b: Budget, measure: str) -> list[str]:
    """Methods measured at both budgets, in `a`'s order."""
    return [m for m in a.methods if a.seeds(m, measure) and b.seeds(m, measure)]


def _strength(margin: float | None, se: float | None) -> str | None:
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
            | {"a_beyond": _strength(da, sa) != "within", "b_beyond": _strength(db, sb) != "within"}
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


# --- lesson 07's verdicts, as data ---------------------------------------------------------------


Claims = Callable[["Budget"], list[tuple[str, str, float, float | None]]]


@dataclass(frozen=True)
class Verdict:
    """A verdict lesson 07 states, where it says so, and its claims at a budget: (key, label,
    margin, se), margin positive as the lesson says (`claims(budget)`)."""

    id: str
    says: str
    where: str
    claims: Claims
    null: bool = False  # a claim that pairs cannot be told apart


def _gap(measure: str, best: str, higher: bool, among: tuple[str, ...] = HEADLINE) -> Claims:
    """`best` ahead of the runner-up by mean among `among` on `measure` (one claim)."""

    def claims(b: Budget) -> list:
        others = [m for m in among if m != best and b.seeds(m, measure)]
        if not b.seeds(best, measure) or not others:
            return []
        means = {m: b.estimate(m, measure).mean for m in others}
        rival = (max if higher else min)(others, key=means.get)
        d, se, _ = b.difference(measure, best, rival)
        label = f"{best} − {rival}" if higher else f"{rival} − {best}"
        return [("runner-up", label, d if higher else -d, se)]

    return claims


def _ordered(measure: str, groups: list[tuple[str, ...]], higher: bool = True) -> Claims:
    """Every pair from different groups in the stated order (earlier better on `measure`)."""

    def claims(b: Budget) -> list:
        out = []
        for i, j in combinations(range(len(groups)), 2):
            for x, y in ((x, y) for x in groups[i] for y in groups[j]):
                d, se, _ = b.difference(measure, x, y)
                if d is not None:
                    label = f"{x} − {y}" if higher else f"{y} − {x}"
                    out.append((f"{measure}:{x}|{y}", label, d if higher else -d, se))
        return out

    return claims


def _beyond_floor(b: Budget) -> list:
    """Per method: its ΔCE (mean over seeds) minus its floor's, errors combined."""
    out = []
    for m in b.methods:
        e, floor = b.estimate(m, "ce"), b.floors.get(m, {})
        if floor.get("general_ce_change") is not None:
            f_se = floor.get("general_ce_change_stderr")
            se = None if e.se is None or f_se is None else math.hypot(e.se, f_se)
            out.append((m, f"{m}: run − floor", e.mean - floor["general_ce_change"], se))
    return out


def _mc_over_recall(b: Budget) -> list:
    """Per method: its MC accuracy minus its recall (paired over its seeds where 2+)."""
    out = [(m, f"{m}: MC − recall", *b.difference("mc", m, m, "recall")[:2]) for m in b.methods]
    return [c for c in out if c[2] is not None]


def _both(*parts: Claims) -> Claims:
    return lambda b: [c for part in parts for c in part(b)]


_FULL_VS_PEFT = [("full",), PEFT]
_ORDER = [("full",), ("lora",), ("qlora",), ("ln-tuning", "top-layers"), ("adapter",), ("ia3",)]
_UNRANKED = [(m,) for m in ("lora", "qlora", "adapter", "ia3", "ln-tuning")]
VERDICTS = tuple(
    Verdict(*row)
    for row in (
        ("full_learned_most", "full fine-tuning recalled the most", "§2, §11, C4",
         _gap("recall", "full", True)),
        ("full_forgot_least", "full fine-tuning raised general-text CE the least", "§2, §5, C3",
         _gap("ce", "full", False)),
        ("full_dominates", "full fine-tuning alone is not beaten on recall and ΔCE (the "
         "comparison's stand-in for §6's matched recall)", "§6, §8",
         _both(_ordered("recall", _FULL_VS_PEFT), _ordered("ce", _FULL_VS_PEFT, False))),
        ("lora_least_of_peft", "of the PEFT methods LoRA cost the least general text", "§11",
         _gap("ce", "lora", False, PEFT)),
        ("qlora_costs_more_than_lora", "QLoRA's 4-bit base cost more general text than LoRA",
         "§5, §11, C8", _ordered("ce", [("lora",), ("qlora",)], False)),
        ("forgetting_order", "ΔCE orders full, LoRA, QLoRA, norm tuning and top blocks (tied), "
         "adapter, (IA)³", "§5, summary", _ordered("ce", _ORDER, False)),
        ("peft_not_ranked_on_recall", "LoRA, QLoRA, the adapter, (IA)³ and norm tuning cannot "
         "be told apart on recall", "§5, summary", _ordered("recall", _UNRANKED), True),
        ("top_layers_recalled_least", "the top blocks recalled least of the headline methods",
         "§5, summary", _gap("recall", "top-layers", False)),
        ("mc_flatters", "every method's MC accuracy runs ahead of its recall", "§2",
         _mc_over_recall),
        ("ce_beyond_floor", "every run's ΔCE is beyond its noise floor's", "§3", _beyond_floor),
    )
)  # fmt: skip
# not testable from one comparison a budget: §6's matched recall itself (a rate sweep per
# budget), and lesson 02's "the rate decides more than the method" (several rates per method)


def check(verdict: Verdict, base: Budget, larger: Budget) -> dict:
    """`verdict` at `base` and `larger`, each claim marked and the verdict's status (the rules
    in the module's docstring); "untestable" where no claim is measured at both."""
    at_base = {k: (lab, m, se) for k, lab, m, se in verdict.claims(base)}
    at_larger = {k: (lab, m, se) for k, lab, m, se in verdict.claims(larger)}
    rows = []
    for key in (k for k in at_larger if k in at_base):
        (lab_a, ma, sa), (lab_b, mb, sb) = at_base[key], at_larger[key]
        sta, stb = _strength(ma, sa), _strength(mb, sb)
        rows.append(
            {"claim": lab_b if lab_a == lab_b else f"{lab_a} → {lab_b}", "base": ma}
            | {"base_se": sa, "base_is": sta, "larger": mb, "larger_se": sb, "larger_is": stb}
            | {"status": _claim_status(sta, stb, (ma > 0) == (mb > 0))}
        )
    out = {"id": verdict.id, "says": verdict.says, "where": verdict.where, "claims": rows}
    out["not_measured_at_both"] = sorted(at_base.keys() ^ at_larger.keys())
    if verdict.null:  # pairs beyond their errors, at the base and at the larger budget
        was, now = (sum(r[k] != "within" for r in rows) for k in ("base_is", "larger_is"))
        status = _first(now <= was, "holds", 2 * now >= len(rows), "reverses", "weakens")
        return out | {"status": status if rows else "untestable"}
    judged = [r["status"] for r in rows if r["status"] != "not supported at the base"]
    holds = all(s == "holds" for s in judged)
    status = _first("reverses" in judged, "reverses", holds, "holds", "weakens")
    return out | {"status": status if judged else "untestable"}


def _first(test: bool, then: str, test2: bool, then2: str, otherwise: str) -> str:
    return then if test else then2 if test2 else otherwise


def _claim_status(base_is: str, larger_is: str, same_sign: bool) -> str:
    """A claim within its errors at both budgets holds only if its sign did not flip."""
    if base_is == "against":
        return "not supported at the base"
    if larger_is == "against":
        return "reverses"
    if larger_is == "for":
        return "holds"
    return "holds" if base_is == "within" and same_sign else "weakens"


def study(comparisons: dict[str, Comparison], base: str | None = None) -> dict:
    """Everything, JSON-able: per budget its rows and what it lacks of the others' methods, the
    rank agreement of each pair of budgets (recall, ΔCE, suite drop) and each verdict at every
    budget against `base` (default: the first)."""
    names = list(comparisons)
    base = base or names[0]
    first = Budget(base, comparisons[base])
    budgets = {n: first if n == base else Budget(n, comparisons[n], first.tasks) for n in names}
    every = sorted({m for b in budgets.values() for m in b.methods})
    most = lambda b: max((len(r) for r in b.runs.values()), default=0)  # noqa: E731
    out: dict = {"base": base, "suite_tasks": list(first.tasks), "budgets": {}}
    for name, b in budgets.items():
        out["budgets"][name] = {
            "runs": len(b.comparison.records),
            "floors": len(b.comparison.floors),
            "failed": len(b.comparison.failed),
            "missing_methods": [m for m in every if m not in b.methods],
            "fewer_seeds": {m: sorted(r) for m, r in b.runs.items() if len(r) < most(b)},
            "rows": b.rows(),
        }
    out["agreement"] = {
        f"{x} vs {y}": {
            m: rank_between(budgets[x], budgets[y], m) for m in ("recall", "ce", "suite_drop")
        }
        for x, y in combinations(names, 2)
    }
    out["verdicts"] = {}
    for n in (n for n in names if n != base):  # each pair on the methods both budgets ran
        shared = [m for m in first.methods if m in budgets[n].methods]
        a, b = first.restricted(shared), budgets[n].restricted(shared)
        out["verdicts"][n] = {"methods": shared, "checked": [check(v, a, b) for v in VERDICTS]}
    return out
