"""Paired statistics, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tutorial_lib.measures import (
    Estimate,
    bootstrap_difference,
    bootstrap_ratio,
    flips,
    flips_by_task,
    paired_mean_shift,
    sign_test_p,
)


def test_flips_count_items_lost_and_gained_and_name_them():
    before = [True, True, False, False, True]
    after = [False, True, True, False, False]
    counted = flips(before, after, ids=["a", "b", "c", "d", "e"])
    assert (counted.lost, counted.gained, counted.n_items, counted.net) == (2, 1, 5, -1)
    assert counted.lost_ids == ["a", "e"] and counted.gained_ids == ["c"]
    assert flips(before, after).lost_ids == []  # no ids given, none invented
    with pytest.raises(ValueError, match="different numbers"):
        flips([True], [True, False])
    with pytest.raises(ValueError, match="ids"):
        flips([True], [False], ids=["a", "b"])


def test_the_sign_test_of_eleven_lost_and_one_gained():
    # 2 * (C(12,0) + C(12,1)) / 2**12 = 26 / 4096
    assert sign_test_p(11, 1) == pytest.approx(26 / 4096) == pytest.approx(0.0063, abs=5e-5)
    assert sign_test_p(1, 11) == sign_test_p(11, 1)  # two-sided
    assert flips([True] * 11 + [False], [False] * 11 + [True]).p_value == sign_test_p(11, 1)


def test_the_sign_test_of_balanced_or_no_flips_is_one():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 3) == 1.0  # capped: both tails overlap at the middle
    assert sign_test_p(2, 0) == pytest.approx(0.5)  # 2 * 1/4
    assert sign_test_p(26, 40) == pytest.approx(0.109, abs=1e-3)  # lesson 01: churn, not loss
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def test_flips_by_task_counts_each_task_apart():
    out = flips_by_task({"arc": ([True, False], [False, False]), "piqa": ([False], [True])})
    assert (out["arc"].lost, out["arc"].gained) == (1, 0)
    assert (out["piqa"].lost, out["piqa"].gained) == (0, 1)


def test_paired_mean_shift_is_the_mean_difference_with_its_paired_error():
    before, after = [-1.0, -2.0, -3.0, -4.0], [-1.5, -2.0, -3.5, -5.0]
    shift = paired_mean_shift(before, after)
    # differences -0.5, 0, -0.5, -1: mean -0.5, sample sd sqrt(0.5/3), over sqrt(4)
    assert shift.value == pytest.approx(-0.5)
    assert shift.stderr == pytest.approx(math.sqrt(0.5 / 3) / 2)
    assert shift.ci95 == pytest.approx(
        (-0.5 - 1.96 * shift.stderr, -0.5 + 1.96 * shift.stderr), abs=1e-4
    )
    one = paired_mean_shift([1.0], [2.0])
    assert one.value == 1.0 and one.stderr is None and one.ci95 is None
    with pytest.raises(ValueError):
        paired_mean_shift([1.0], [1.0, 2.0])


def test_bootstrap_ratio_is_the_ratio_of_sums_with_a_seeded_error():
    num, den = [3.0, 1.0, 2.0, 6.0], [10, 10, 20, 20]
    est = bootstrap_ratio(num, den, seed=0)
    assert est.value == pytest.approx(12 / 60) and est.n == 4
    assert est.stderr > 0 and est.ci95[0] <= est.value <= est.ci95[1]
    assert bootstrap_ratio(num, den, seed=0) == est  # seeded: the same numbers every time
    assert bootstrap_ratio(num, den, seed=1) != est
    # the bootstrap error of a mean is close to its standard error (sd / sqrt(n) * sqrt((n-1)/n))
    values = np.random.default_rng(3).normal(size=200)
    boot = bootstrap_difference(np.zeros(200), values, samples=4000)
    assert boot.value == pytest.approx(values.mean())
    assert boot.stderr == pytest.approx(values.std() / math.sqrt(200), rel=0.1)


def test_a_constant_ratio_has_no_spread_and_one_unit_has_no_error():
    est = bootstrap_ratio([2.0, 4.0, 6.0], [1, 2, 3])
    assert est.value == pytest.approx(2.0) and est.stderr == pytest.approx(0.0, abs=1e-12)
    one = bootstrap_ratio([2.0], [4])
    assert one.value == 0.5 and one.stderr is None and one.ci95 is None
    assert one.text() == "+0.500, no error estimate (1 passage)"
    assert Estimate(0.0125, 0.004, (0.005, 0.02), 16).text(unit="nats/token") == (
        "+0.013 ± 0.004 nats/token"
    )
    with pytest.raises(ValueError):
        bootstrap_ratio([1.0, 2.0], [1])
    with pytest.raises(ValueError):
        Estimate(1.0, -0.1)
