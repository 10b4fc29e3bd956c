"""The comparison statistics and the law tests against slow, obviously correct references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.evaluation import pass_at_k, pass_at_k_curve
from covgym.statistics import law_comparison, mean_ci, paired_difference, windowed


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c of them correct) that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_brute_force(args):
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_curve_keys_and_pass_at_1_is_mean():
    curve = pass_at_k_curve(16, [0, 3, 16, 8])
    assert list(curve) == ["pass@1", "pass@2", "pass@4", "pass@8", "pass@16"]
    assert curve["pass@1"] == pytest.approx(np.mean([0, 3 / 16, 1, 0.5]))
    assert curve["pass@16"] == pytest.approx(0.75)
    assert all(a <= b + 1e-12 for a, b in zip(list(curve.values()), list(curve.values())[1:]))
    assert list(pass_at_k_curve(6, [1, 2])) == ["pass@1", "pass@2", "pass@4", "pass@6"]


def test_mean_ci_matches_the_t_interval_by_hand():
    values = [1.0, 2.0, 4.0]
    result = mean_ci(values)
    s = np.std(values, ddof=1)
    assert result["mean"] == pytest.approx(7 / 3)
    assert result["half_width"] == pytest.approx(4.302652729911275 * s / math.sqrt(3))  # t(0.975, 2)
    assert mean_ci([5.0])["half_width"] is None and mean_ci([])["mean"] is None


def test_paired_difference_uses_only_shared_seeds_and_cancels_shared_noise():
    baseline = {0: 0.50, 1: 0.70, 2: 0.30, 3: 0.9}
    method = {0: 0.55, 1: 0.75, 2: 0.35, 4: 0.0}
    result = paired_difference(method, baseline)
    assert result["seeds"] == [0, 1, 2]
    assert result["mean"] == pytest.approx(0.05)
    assert result["half_width"] == pytest.approx(0.0, abs=1e-12)  # the same gain on every seed: no doubt left
    unpaired = mean_ci([0.55, 0.75, 0.35])["half_width"]
    assert unpaired > 0.3


def test_windowed_means():
    assert windowed([1, 2, 3, 4, 5, 6, 7], 3).tolist() == [2.0, 5.0]
    assert windowed([1, 2], 3).tolist() == [1.0, 2.0]


def test_law_comparison_prefers_the_exponential_law_on_data_it_generated():
    entropy = np.linspace(1.6, 0.05, 60)
    reward = 0.95 - 0.12 * np.exp(entropy)
    result = law_comparison(entropy, reward)
    assert result["law_r2"] == pytest.approx(1.0)
    assert result["law_a"] == pytest.approx(0.12) and result["law_b"] == pytest.approx(0.95)
    assert result["law_r2_linear"] < result["law_r2"]
    assert result["law_forecast_r2"] > 0.99 > result["law_forecast_r2_linear"]


def test_law_comparison_on_a_straight_line_is_no_better_than_the_line():
    entropy = np.linspace(0.45, 0.27, 40)
    reward = 1.0 - entropy
    result = law_comparison(entropy, reward)
    assert result["law_r2_linear"] == pytest.approx(1.0)
    assert result["law_r2"] < result["law_r2_linear"]  # the curved law cannot follow a straight line exactly


def test_law_comparison_too_few_points_is_nan():
    result = law_comparison([0.5, 0.4, 0.3], [0.1, 0.2, 0.3])
    assert math.isnan(result["law_r2"]) and result["law_points"] == 3.0


def test_forecast_needs_enough_points_in_each_half():
    entropy = np.linspace(1.5, 0.1, 6)
    result = law_comparison(entropy, 0.9 - 0.1 * np.exp(entropy))
    assert result["law_r2"] == pytest.approx(1.0) and math.isnan(result["law_forecast_r2"])
