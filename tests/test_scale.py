"""Scale study (`tutorial_lib.scale`): rank agreement, pairwise orders and lesson 07's verdict
rules on small comparisons built here, and the committed comparison against itself."""

from __future__ import annotations

import json

import pytest

from tutorial_lib import scale, verdicts
from tutorial_lib.compare import Comparison, of_json
from tutorial_lib.data import results_dir

METHODS = scale.HEADLINE


def run(method: str, seed: int, recall: float, ce: float, se: float = 0.01, **extra) -> dict:
    """A finished run record with the fields the study reads."""
    return {
        "method": method,
        "seed": seed,
        "lr": 1e-3,
        "domain_recall_after": recall,
        "domain_recall_after_stderr": se,
        "domain_accuracy_after": min(1.0, recall + 0.1),
        "domain_accuracy_before": 0.3,
        "domain_n_items": 56,
        "general_ce_change": ce,
        "general_ce_change_stderr": se,
        "kl_to_base": ce + 0.1,
        "kl_to_base_stderr": se,
        "trajectory": [],
        "sec_per_step": 1.0,
        "peak_memory_bytes": 2**30,
        "trainable_params": 1000,
        "load_average": 1.0,
    } | extra


def comparison(recall: dict, ce: dict, seeds: int = 3, jitter: float = 0.001) -> Comparison:
    """Every method in `recall` with `seeds` seeds, seed s shifted by s × jitter."""
    records = [
        run(m, s, recall[m] + s * jitter, ce[m] + s * jitter) for s in range(seeds) for m in recall
    ]
    return Comparison(records, None)


BASE_RECALL = dict(zip(METHODS, (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)))
BASE_CE = dict(zip(METHODS, (0.1, 0.2, 0.3, 0.5, 0.9, 0.4, 0.45)))


def budgets(recall: dict, ce: dict, seeds: int = 3) -> tuple[scale.Budget, scale.Budget]:
    base = scale.Budget("1×", comparison(BASE_RECALL, BASE_CE))
    return base, scale.Budget("4×", comparison(recall, ce, seeds))


def test_tau_of_identical_orders_is_one_and_of_reversed_orders_minus_one():
    base, same = budgets(BASE_RECALL, BASE_CE)
    got = scale.rank_between(base, same, "recall")
    assert got["tau"] == pytest.approx(1.0) and got["n"] == 7
    assert got["bootstrap"] == "seeds" and got["ci95"][0] == pytest.approx(1.0)
    assert got["se_null"] == pytest.approx(0.3, abs=0.02)  # √(2·19 / (9·7·6))
    reversed_recall = {m: 1 - v for m, v in BASE_RECALL.items()}
    _, flipped = budgets(reversed_recall, BASE_CE)
    assert scale.rank_between(base, flipped, "recall")["tau"] == pytest.approx(-1.0)


def test_one_seed_bootstraps_over_methods():
    base, one = budgets(BASE_RECALL, BASE_CE, seeds=1)
    got = scale.rank_between(base, one, "ce")
    assert got["bootstrap"] == "methods" and got["tau"] == pytest.approx(1.0)
    assert one.estimate("full", "recall").how == "one run's measurement error"
    assert one.estimate("full", "recall").se == pytest.approx(0.01)


def test_pairwise_agreements_count_pairs_and_errors():
    base, _ = budgets(BASE_RECALL, BASE_CE)
    swapped = dict(BASE_RECALL, full=0.75)  # full now below lora (0.8), above qlora
    _, larger = budgets(swapped, BASE_CE)
    got = scale.rank_between(base, larger, "recall")
    assert got["same_order"] == 20 and got["opposite_order"] == 1
    (pair,) = [p for p in got["pairs"] if p["same_order"] is False]
    assert pair["pair"] == "full − lora" and pair["a_beyond"] and pair["b_beyond"]
    assert got["opposite_beyond_both"] == 1


def _verdict(vid: str) -> verdicts.Verdict:
    return next(v for v in verdicts.VERDICTS if v.id == vid)


@pytest.mark.parametrize(
    ("full_ce", "noise", "expected"),
    [
        (0.05, 0.001, "holds"),  # full still least, by far more than its errors
        (0.195, 0.03, "weakens"),  # still least by 0.005, within 2 errors (0.035)
        (0.6, 0.001, "reverses"),  # lora now least, beyond the errors
    ],
)
def test_each_rule_gives_holds_weakens_reverses(full_ce, noise, expected):
    base = scale.Budget("1×", comparison(BASE_RECALL, BASE_CE))  # full least by 0.1, error 0
    wobble = (noise, -noise, 0.0)  # full's seeds: the paired gap's error is noise / √3
    records = [
        run(m, s, BASE_RECALL[m], full_ce + wobble[s] if m == "full" else BASE_CE[m])
        for s in range(3)
        for m in METHODS
    ]
    larger = scale.Budget("4×", Comparison(records, None))
    got = verdicts.check(_verdict("full_forgot_least"), base, larger)
    assert got["status"] == expected, got["claims"]
    assert got["claims"][0]["base_is"] == "for"


def test_order_verdict_reverses_when_any_pair_reverses_and_null_verdict_counts_pairs():
    base, same = budgets(BASE_RECALL, BASE_CE)
    assert verdicts.check(_verdict("forgetting_order"), base, same)["status"] == "holds"
    _, flipped = budgets(BASE_RECALL, dict(BASE_CE, ia3=0.15))  # (IA)³ no longer worst
    got = verdicts.check(_verdict("forgetting_order"), base, flipped)
    assert got["status"] == "reverses"
    assert any(c["status"] == "reverses" and "ia3" in c["claim"] for c in got["claims"])
    # the null verdict: at the base the PEFT methods' recall differs beyond the errors (10
    # pairs beyond), so the same at the larger budget holds; none beyond still holds
    assert verdicts.check(_verdict("peft_not_ranked_on_recall"), base, same)["status"] == "holds"


def test_null_verdict_weakens_and_reverses_as_more_pairs_part():
    tied = dict(BASE_RECALL, **{m: 0.6 for m in ("lora", "qlora", "adapter", "ia3", "ln-tuning")})
    noisy = [
        run(m, s, tied[m] + (0.05 if (s + i) % 2 else -0.05), 0.1)
        for s in range(3)
        for i, m in enumerate(METHODS)
    ]
    base = scale.Budget("1×", Comparison(noisy, None))
    verdict = _verdict("peft_not_ranked_on_recall")
    assert verdicts.check(verdict, base, base)["status"] == "holds"
    one_apart = dict(tied, lora=0.9)  # 4 of 10 pairs now beyond: fewer than half
    _, some = budgets(one_apart, BASE_CE)
    assert verdicts.check(verdict, base, some)["status"] == "weakens"
    _, all_apart = budgets(BASE_RECALL, BASE_CE)  # every pair beyond
    assert verdicts.check(verdict, base, all_apart)["status"] == "reverses"


def test_missing_methods_and_seeds_are_named_not_errors():
    base = comparison(BASE_RECALL, BASE_CE)
    partial = Comparison([run("full", 0, 0.95, 0.2), run("lora", 0, 0.7, 0.3)], None)
    doc = verdicts.study({"1×": base, "4×": partial})
    info = doc["budgets"]["4×"]
    assert info["missing_methods"] == sorted(set(METHODS) - {"full", "lora"})
    assert doc["verdicts"]["4×"]["methods"] == ["full", "lora"]
    status = {v["id"]: v["status"] for v in doc["verdicts"]["4×"]["checked"]}
    assert status["full_learned_most"] == "holds" and status["forgetting_order"] == "holds"
    assert status["ce_beyond_floor"] == "untestable"  # no floors at either budget
    assert doc["agreement"]["1× vs 4×"]["recall"]["tau"] is None  # 2 methods: no τ
    fewer = [run("full", 0, 0.9, 0.1), run("full", 1, 0.9, 0.1), run("lora", 0, 0.8, 0.2)]
    fewer = Comparison(fewer, None)
    assert verdicts.study({"1×": base, "4×": fewer})["budgets"]["4×"]["fewer_seeds"] == {
        "lora": [0]
    }


def test_from_runs_reads_the_cache_floors_apart(tmp_path):
    cache = tmp_path / "runs.jsonl"
    rows = [run("full", 0, 0.9, 0.1), run("full", 0, 0.0, -0.2, train_on="general")]
    cache.write_text("".join(json.dumps({"key": str(i), "config": {}, "result": r}) + "\n"
                             for i, r in enumerate(rows)))  # fmt: skip
    got = scale.from_runs(cache)
    assert [r["method"] for r in got.records] == ["full"] and len(got.floors) == 1
    budget = scale.Budget("4×", got)
    assert budget.rows()[0]["floor_ce"] == -0.2 and budget.rows()[0]["floor_steps"] is None
    twice = [*got.floors, {**got.floors[0], "steps": 31}]  # an uncapped and a capped floor
    with pytest.raises(ValueError, match=r"4×: full has two noise floors \(steps \[None, 31\]\)"):
        scale.Budget("4×", Comparison(got.records, None, twice))


def test_the_committed_comparison_against_itself_holds_everywhere():
    saved = of_json(json.loads((results_dir() / "compare-lesson.json").read_text()))
    doc = verdicts.study({"1×": saved, "1× again": saved})
    checked = doc["verdicts"]["1× again"]["checked"]
    assert len(checked) == len(verdicts.VERDICTS)
    assert {v["id"]: v["status"] for v in checked} == {v.id: "holds" for v in verdicts.VERDICTS}
    for measure, got in doc["agreement"]["1× vs 1× again"].items():
        assert got["tau"] == pytest.approx(1.0), measure
        assert got["opposite_order"] == 0


def test_a_claim_within_errors_at_both_budgets_holds_only_with_the_same_sign():
    assert verdicts._claim_status("within", "within", True) == "holds"
    assert verdicts._claim_status("within", "within", False) == "weakens"  # the order flipped
    assert verdicts._claim_status("for", "within", True) == "weakens"
    assert verdicts._claim_status("within", "for", True) == "holds"
    assert verdicts._claim_status("for", "against", False) == "reverses"
    assert verdicts._claim_status("against", "for", False) == "not supported at the base"


def test_one_seed_verdicts_are_checked_again_with_the_seeds_spread():
    base = comparison(BASE_RECALL, BASE_CE, jitter=0.03)  # sd over seeds 0.03, a run's error 0.01
    close = BASE_CE | {"lora": BASE_CE["full"] + 0.04}  # beyond 2 item errors, not 2 widened ones
    doc = verdicts.study({"1×": base, "4×": comparison(BASE_RECALL, close, seeds=1)})
    assert doc["seed_spread"]["1×"]["ce"] == pytest.approx(3.0)
    assert doc["seed_spread"]["4×"]["ce"] is None  # one seed: no spread to measure
    assert doc["widening"]["ce"] == pytest.approx(10**0.5)
    plain = {v["id"]: v for v in doc["verdicts"]["4×"]["checked"]}
    wide = {v["id"]: v for v in doc["verdicts_widened"]["4×"]["checked"]}
    assert plain["full_forgot_least"]["status"] == "holds"
    assert wide["full_forgot_least"]["status"] == "weakens"  # it rested on the one seed
    se = plain["full_forgot_least"]["claims"][0]["larger_se"]
    assert wide["full_forgot_least"]["claims"][0]["larger_se"] == pytest.approx(se * 10**0.5)
    seeded = verdicts.study({"1×": base, "4×": comparison(BASE_RECALL, close)})
    assert seeded["verdicts_widened"] == {}  # three seeds: their own spread is in the errors
