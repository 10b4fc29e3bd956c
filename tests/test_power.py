"""Power of seed-paired comparisons against slow, obviously correct references: Monte-Carlo power, Holm's
textbook step-down procedure, and a brute-force search over seed counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from covgym.measure.power import (holm, minimum_detectable_effect, paired_t_power, paired_t_test, power_summary,
                                  seeds_needed)


def simulated_power(effect: float, sd: float, n: int, alpha: float = 0.05, trials: int = 20000,
                    seed: int = 0) -> float:
    """Share of simulated experiments (n normal paired differences) in which the two-sided t-test rejects."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, sd, size=(trials, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    return float(np.mean(np.abs(t) > stats.t.ppf(1 - alpha / 2, n - 1)))


@pytest.mark.parametrize("n, sd", [(3, 0.3), (5, 1.0), (12, 0.08)])
def test_mde_has_80_percent_power_by_simulation(n, sd):
    mde = minimum_detectable_effect(sd, n)
    assert simulated_power(mde, sd, n) == pytest.approx(0.8, abs=0.015)  # 20000 trials: s.e. 0.003


def test_mde_is_not_the_normal_approximation():
    n, sd = 5, 1.0
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / math.sqrt(n)
    assert simulated_power(normal, sd, n) < 0.7  # the approximation promises 80 % and delivers far less
    assert minimum_detectable_effect(sd, n) > 1.15 * normal


@pytest.mark.parametrize("effect, sd, n", [(0.5, 1.0, 4), (0.05, 0.06, 10), (-0.2, 0.3, 7)])
def test_power_function_matches_simulation(effect, sd, n):
    assert paired_t_power(effect, sd, n) == pytest.approx(simulated_power(effect, sd, n, seed=1), abs=0.015)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.01, 5.0), st.integers(2, 40), st.integers(1, 20))
def test_mde_grows_with_sd_and_falls_with_seeds(sd, n, more):
    mde = minimum_detectable_effect(sd, n)
    assert mde > 0
    assert minimum_detectable_effect(sd, n + more) < mde
    assert minimum_detectable_effect(2 * sd, n) == pytest.approx(2 * mde, rel=1e-6)
    assert paired_t_power(mde, sd, n) == pytest.approx(0.8, abs=1e-6)


def brute_force_seeds(effect: float, sd: float, power: float = 0.8) -> int:
    n = 2
    while paired_t_power(effect, sd, n) < power:
        n += 1
    return n


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 3.0), st.floats(0.05, 2.0))
def test_seeds_needed_is_the_smallest_n_reaching_80_percent_power(standardized, sd):
    effect = standardized * sd
    n = seeds_needed(effect, sd)
    assert n == brute_force_seeds(effect, sd)
    assert paired_t_power(effect, sd, n) >= 0.8
    assert n == 2 or paired_t_power(effect, sd, n - 1) < 0.8
    assert seeds_needed(-effect, sd) == n  # two-sided


def test_seeds_needed_edge_cases():
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.1, math.nan) is None
    assert seeds_needed(0.1, 0.0) == 2
    assert seeds_needed(1e-4, 1.0, max_seeds=1000) is None  # out of reach
    assert seeds_needed(0.05, 0.2) == brute_force_seeds(0.05, 0.2)  # a realistic pass@1 case: ~128 seeds


def test_mde_and_seeds_needed_agree():
    sd = 0.3
    for n in (3, 10, 25):
        assert seeds_needed(minimum_detectable_effect(sd, n) * 1.0001, sd) == n


def test_paired_t_test_equals_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.5, 0.1, 8), rng.normal(0.45, 0.1, 8)
    assert paired_t_test(a - b) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)
    assert paired_t_test([0.1]) is None
    assert paired_t_test([0.25, 0.25, 0.25]) == 0.0 and paired_t_test([0.0, 0.0]) == 1.0


def textbook_holm_rejections(p_values: list[float], alpha: float) -> set[int]:
    """Holm (1979): order the p-values; reject while p_(i) ≤ α / (m − i + 1) (1-based i), stop at the first that
    is not."""
    m = len(p_values)
    rejected = set()
    for i, index in enumerate(sorted(range(m), key=lambda j: p_values[j]), start=1):
        if p_values[index] > alpha / (m - i + 1):
            break
        rejected.add(index)
    return rejected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
       st.sampled_from([0.01, 0.05, 0.1, 0.2]))
def test_holm_rejects_exactly_what_the_textbook_procedure_rejects(p_values, alpha):
    adjusted = holm(p_values)
    assert {i for i, p in enumerate(adjusted) if p <= alpha} == textbook_holm_rejections(p_values, alpha)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=0, max_size=8))
def test_holm_adjusted_p_values_are_monotone_bounded_and_at_least_raw(p_values):
    adjusted = holm(p_values)
    pairs = [(p, q) for p, q in zip(p_values, adjusted) if p is not None]
    assert all(q is None for p, q in zip(p_values, adjusted) if p is None)
    assert all(p <= q <= 1.0 for p, q in pairs)
    for p1, q1 in pairs:
        for p2, q2 in pairs:
            if p1 <= p2:
                assert q1 <= q2
    if len(pairs) == 1:
        assert pairs[0][1] == pairs[0][0]  # a family of one needs no correction


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.01, None, 0.5]) == [pytest.approx(0.02), None, pytest.approx(0.5)]


def test_power_summary_of_one_comparison():
    d = [0.06, 0.02, 0.09, 0.04, 0.05]
    summary = power_summary(d, target_effect=0.05)
    sd = float(np.std(d, ddof=1))
    assert summary["sd"] == pytest.approx(sd)
    assert summary["p_value"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue)
    assert summary["mde"] == pytest.approx(minimum_detectable_effect(sd, 5))
    assert summary["seeds_needed_observed"] == seeds_needed(np.mean(d), sd)
    assert summary["seeds_needed_target"] == seeds_needed(0.05, sd)
    single = power_summary([0.1], 0.05)
    assert single["p_value"] is None and single["mde"] is None and single["seeds_needed_target"] is None
