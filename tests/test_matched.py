"""Matched recall: read only between two real runs of a method that bracket the target."""

from __future__ import annotations

import pytest

from tutorial_lib import matched


def run(method: str, lr: float, recall: float, forgetting: float, **extra) -> dict:
    """A run record with the numbers matched figures are read from."""
    return (
        {"method": method, "lr": lr, "domain_recall_after": recall}
        | {
            "forgetting": forgetting,
            "forgetting_stderr": 0.02,
            "retention": 1 - forgetting,
        }
        | extra
    )


def test_a_matched_figure_is_interpolated_between_the_two_bracketing_runs():
    runs = [run("full", 1e-5, 0.2, 0.01), run("full", 3e-5, 0.6, 0.05), run("full", 1e-4, 0.9, 0.2)]
    m = matched.over_rates(runs, target=0.5)
    assert m.between == (1e-5, 3e-5) and m.axis == "lr" and m.key == "domain_recall_after"
    assert m.values["forgetting"] == pytest.approx(0.04)  # 3/4 of the way from 0.01 to 0.05
    assert m.values["lr"] == pytest.approx(2.5e-5)
    assert m.stderr("forgetting") == pytest.approx(0.02)
    assert matched.over_rates(runs, target=0.6).values["forgetting"] == pytest.approx(0.05)


def test_the_base_is_never_a_point():
    base = {"method": "lora", "lr": 0.0, "domain_recall_after": 0.1, "forgetting": 0.0}
    runs = [base, run("lora", 1e-3, 0.5, 0.02), run("lora", 3e-3, 0.7, 0.04)]
    m = matched.over_rates(runs, target=0.3)  # only the base lies below: no line from it
    assert m.values is None and "lower lr must be measured" in m.reason
    one = matched.over_rates(runs[:2], target=0.4)
    assert one.values is None and "1 measured point(s) besides the base" in one.reason
    high = matched.over_rates(runs, target=0.8)
    assert high.values is None and "stays below the target (0.700 < 0.800)" in high.reason
    trajectory = [
        {"step": 0, "domain_recall": 0.1, "forgetting": 0.0},
        {"step": 14, "domain_recall": 0.5, "forgetting": 0.03},
        {"step": 28, "domain_recall": 0.9, "forgetting": 0.05},
    ]
    path = {"method": "lora", "trajectory": trajectory}
    assert matched.over_steps(path, 0.3).values is None  # step 0 would have bracketed it
    assert matched.over_steps(path, 0.7).values["step"] == pytest.approx(21)


def test_the_target_is_where_every_method_measured():
    runs = [run("full", 1e-5, 0.2, 0.0), run("full", 1e-4, 0.9, 0.1)]
    runs += [run("lora", 1e-3, 0.4, 0.0), run("lora", 3e-3, 0.6, 0.1)]
    target, why = matched.common_target(matched.by_method(runs))
    assert target == pytest.approx(0.5) and "every method measured" in why
    apart = [run("full", 1e-5, 0.2, 0.0), run("lora", 1e-3, 0.4, 0.0)]
    assert matched.common_target(matched.by_method(apart))[0] is None
    table = matched.table(runs)
    assert table.loc["lora", "forgetting"] == pytest.approx(0.05)
    assert table.loc["full", "between lr"] == "1e-05–0.0001"


def test_only_methods_whose_recall_rose_beyond_twice_its_error_are_matched():
    def change(method: str, lr: float, rise: float, se: float | None) -> dict:
        extra = {"domain_recall_change": rise, "domain_recall_change_stderr": se}
        return run(method, lr, 0.1 + rise, 0.0, **extra)

    runs = [change("adapter", 1e-3, 0.05, 0.04), change("adapter", 1e-2, 0.30, 0.06)]
    runs += [change("prompt-tuning", 0.1, 0.07, 0.04), change("prompt-tuning", 0.3, 0.0, 0.0)]
    runs += [change("ia3", 0.1, 0.5, None)]  # no error recorded: not shown to have learned
    learned = matched.learned_methods(matched.by_method(runs))
    assert list(learned) == ["adapter"] and len(learned["adapter"]) == 2  # every run kept
    assert list(matched.learned_methods(matched.by_method(runs), z=1.0)) == [
        "adapter",
        "prompt-tuning",
    ]


def test_a_difference_is_paired_over_shared_items_when_runs_carry_them():
    items = lambda *v: {"forgetting_items": dict(zip("abcd", v))}  # noqa: E731
    a = [run("full", 1e-5, 0.2, 0.0, **items(0, 0, 0, 0)), run("full", 1e-4, 0.6, 0.5)]
    a[1] |= items(1, 1, 0, 0)
    b = [run("lora", 1e-3, 0.2, 0.0, **items(0, 0, 0, 0)), run("lora", 3e-3, 0.6, 0.25)]
    b[1] |= items(1, 0, 0, 0)
    ma, mb = matched.over_rates(a, 0.4), matched.over_rates(b, 0.4)
    paired = matched.difference(ma, mb)
    assert paired["difference"] == pytest.approx(0.125) and paired["how"] == "paired over 4 items"
    assert paired["se"] == pytest.approx((0.046875 / 4) ** 0.5)  # items 0, .5, 0, 0: var 3/64
    alone = matched.difference(matched.over_rates(a[:1] + [run("full", 1e-4, 0.6, 0.5)], 0.4), mb)
    assert alone["how"].startswith("independent") and alone["se"] == pytest.approx(0.02 * 2**0.5)
    missing = matched.difference(ma, matched.over_rates(b[:1], 0.4))
    assert missing["difference"] is None and missing["how"].startswith("lora: 1 measured point")
    with pytest.raises(ValueError, match="same target"):
        matched.difference(ma, matched.over_rates(b, 0.3))


def sweep(method: str, recalls: dict[float, float], **extra) -> list[dict]:
    return [
        {"method": method, "lr": lr, "domain_recall_after": v, **extra} for lr, v in recalls.items()
    ]


def test_the_rate_rule_takes_the_lowest_rate_within_the_margin_of_the_best():
    from tutorial_lib.results import RATE_RULE, choose_rate

    runs = sweep("lora", {1e-4: 0.40, 3e-4: 0.70, 1e-3: 0.74, 3e-3: 0.78}, domain_n_items=56)
    runs += sweep("full", {1e-5: 0.5, 3e-5: 0.8, 1e-4: 0.6}, domain_recall_after_stderr=0.05)
    runs.append({"method": "full", "lr": 1e-3, "error": {"type": "X", "message": "nan"}})
    chosen = choose_rate(runs)
    lora = chosen["lora"]
    assert lora["best_lr"] == 3e-3 and lora["lr"] == 1e-3  # 0.74 is within 0.055 of 0.78
    assert lora["margin"] == pytest.approx((0.78 * 0.22 / 56) ** 0.5)
    assert lora["rates"][3e-4] == 0.70 and lora["rule"] == RATE_RULE
    assert chosen["full"]["lr"] == 3e-5 and chosen["full"]["margin"] == pytest.approx(0.05)
    assert choose_rate(runs, margin=0.1)["lora"]["lr"] == 3e-4  # a stated margin is used as is
    assert choose_rate(runs, margin=0.0)["lora"]["lr"] == 3e-3
    seeds = runs + sweep("lora", {1e-3: 0.66}, domain_n_items=56)  # a second seed at 1e-3
    again = choose_rate(seeds)["lora"]  # seeds are averaged: 1e-3 falls to 0.70, outside
    assert again["rates"][1e-3] == pytest.approx(0.70) and again["lr"] == 3e-3
    with pytest.raises(ValueError, match=r"ia3: a rate is chosen from at least 3 rates"):
        choose_rate(sweep("ia3", {1e-3: 0.5, 3e-3: 0.6}))


def test_a_run_is_read_against_a_sweep_at_its_own_recall_never_from_the_base():
    sweep = [
        run("full", 1e-4, 0.2, 0.02),
        run("full", 3e-4, 0.6, 0.10),
        run("full", 1e-3, 0.8, 0.3),
    ]
    remedies = [
        run("full", 3e-4, 0.4, 0.03, label="l2sp", forgetting_stderr=0.015),
        run("full", 3e-4, 0.1, 0.01, label="replay"),  # below every rate of the sweep
    ]
    table = matched.versus_sweep(sweep, remedies, measures=("forgetting",))
    assert table.loc["l2sp", "reference between lr"] == "0.0001–0.0003"
    assert table.loc["l2sp", "forgetting (reference)"] == pytest.approx(0.06)  # halfway
    assert table.loc["l2sp", "forgetting difference"] == pytest.approx(-0.03)
    assert table.loc["l2sp", "forgetting ±"] == pytest.approx((0.015**2 + 0.02**2) ** 0.5)
    assert (
        table.loc["replay", "forgetting difference"] is None
        or (table["forgetting difference"].isna()["replay"])
    )
    assert "stays below" not in table.loc["replay", "no matched figure because"]
    assert "lowest lr measured already exceeds" in table.loc["replay", "no matched figure because"]


def test_fair_rate_reads_the_sweeps_choice_else_the_registry_default(tmp_path):
    import json

    from tutorial_lib.methods import get_method
    from tutorial_lib.rates import fair_rate, swept_runs

    record = tmp_path / "rate-sweep.json"
    record.write_text(json.dumps({"methods": {"ia3": {"chosen_lr": 0.03}}}))
    assert fair_rate("ia3", record) == (0.03, "the fair-rate sweep's choice (rate-sweep.json)")
    lr, source = fair_rate("adapter", record)
    assert lr == get_method("adapter").default_lr and "registry default" in source

    sweep = tmp_path / "runs.jsonl"
    rows = [
        {"config": {}, "result": {"method": "ia3", "lr": 0.1}},
        {"config": {}, "result": {"method": "lora", "lr": 0.01}},
        {"config": {}, "result": {"method": "adapter", "lr": 0.03}},
        {"config": {}, "result": {"method": "ia3", "lr": 0.03}},
        {"config": {}, "result": {"method": "ia3", "lr": 0.3, "error": "diverged"}},
    ]
    sweep.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    runs = swept_runs(["adapter", "ia3"], sweep)
    assert [(r["method"], r["lr"]) for r in runs] == [
        ("adapter", 0.03),
        ("ia3", 0.03),
        ("ia3", 0.1),
    ]
    assert runs[1]["label"] == "ia3 0.03" and runs[1]["group"] == "ia3"
