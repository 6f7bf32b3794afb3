"""Lesson 07's verdicts checked at larger budgets, and the scale study that gathers it all.

**Verdicts** (`VERDICTS`): each is a list of claims, a claim a signed margin (positive = as the
lesson says) with its error. A claim is *for* (margin > 2 se), *against* (margin < −2 se) or
*within*. At a larger budget a claim **holds** when it is for, or within where it was within at
the base too with the same sign; **reverses** when against; **weakens** otherwise. A claim
against at the base is left out (the lesson's data did not support it). A verdict holds when every claim holds,
reverses when any reverses, else weakens. The null verdict (`peft_not_ranked_on_recall`: pairs
that cannot be told apart) counts pairs beyond their errors instead: holds when no more than
at the base, reverses when half or more, else weakens. A "runner-up" claim (`_gap`) is read
against each budget's own runner-up; "untestable": no claim measured at both budgets. Within
errors at both counts as holding: the larger budget is as sure as the lesson's was. Methods
missing are named, never errors.

A budget with one seed a method has errors from its items alone. `study` therefore also checks
each verdict there with those errors widened (`scale.widening`) by the largest seed spread the
budgets with seeds measured (`seed_spread`): a verdict whose status changes rests on the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

from tutorial_lib.compare import Comparison
from tutorial_lib.scale import (
    HEADLINE,
    MEASURES,
    PEFT,
    Budget,
    rank_between,
    seed_spread,
    strength,
    widening,
)

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
        ("full_learned_most", "full fine-tuning recalled the most", "§2, §10, C4",
         _gap("recall", "full", True)),
        ("full_forgot_least", "full fine-tuning raised general-text CE the least", "§2, §5, C3",
         _gap("ce", "full", False)),
        ("full_dominates", "full fine-tuning alone is not beaten on recall and ΔCE (the "
         "comparison's stand-in for §6's matched recall)", "§6, Pareto appendix",
         _both(_ordered("recall", _FULL_VS_PEFT), _ordered("ce", _FULL_VS_PEFT, False))),
        ("lora_least_of_peft", "of the PEFT methods LoRA cost the least general text", "§10",
         _gap("ce", "lora", False, PEFT)),
        ("qlora_costs_more_than_lora", "QLoRA's 4-bit base cost more general text than LoRA",
         "§5, §10, C8", _ordered("ce", [("lora",), ("qlora",)], False)),
        ("forgetting_order", "ΔCE orders full, LoRA, QLoRA, norm tuning and top blocks (tied), "
         "adapter, (IA)³", "§5, summary", _ordered("ce", _ORDER, False)),
        ("peft_not_ranked_on_recall", "LoRA, QLoRA, the adapter, (IA)³ and norm tuning cannot "
         "be told apart on recall", "§5, summary", _ordered("recall", _UNRANKED), True),
        ("top_layers_recalled_least", "the top blocks recalled least of the headline methods",
         "§5", _gap("recall", "top-layers", False)),
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
        sta, stb = strength(ma, sa), strength(mb, sb)
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
    spreads = {n: {m: seed_spread(b, m) for m in MEASURES} for n, b in budgets.items()}
    out["seed_spread"] = spreads
    widest = {m: max((s[m] for s in spreads.values() if s[m] is not None), default=None)
              for m in MEASURES}  # fmt: skip
    out["widening"] = widening(widest)
    out["verdicts"], out["verdicts_widened"] = {}, {}
    for n in (n for n in names if n != base):  # each pair on the methods both budgets ran
        shared = [m for m in first.methods if m in budgets[n].methods]
        a, b = first.restricted(shared), budgets[n].restricted(shared)
        out["verdicts"][n] = {"methods": shared, "checked": [check(v, a, b) for v in VERDICTS]}
        if most(budgets[n]) == 1 and out["widening"]:  # one seed: does a verdict rest on it?
            wide = Budget(n, comparisons[n], first.tasks, out["widening"]).restricted(shared)
            checked = [check(v, a, wide) for v in VERDICTS]
            out["verdicts_widened"][n] = {"methods": shared, "checked": checked}
    return out
