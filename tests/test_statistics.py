"""The comparison statistics and the law tests against slow, obviously correct references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.measure.statistics import law_comparison, mean_ci, paired_difference, windowed
from covgym.train.evaluation import pass_at_k, pass_at_k_curve


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


# ------------------------------------------------------------------------------- exp law vs line vs power law
TRUTHS = {"exp": lambda h: 0.95 - 0.12 * np.exp(h), "linear": lambda h: 0.8 - 0.3 * h,
          "power": lambda h: 0.9 - 0.25 * h**2.5}


def _noisy(truth: str, seed: int, sigma: float = 0.003, points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    entropy = np.linspace(1.6, 0.02, points)  # training order: entropy falls
    return entropy, TRUTHS[truth](entropy) + np.random.default_rng(seed).normal(0.0, sigma, points)


def test_each_law_recovers_the_parameters_of_data_it_generated():
    exp = law_comparison(*_noisy("exp", 0))
    assert exp["law_a"] == pytest.approx(0.12, abs=0.002) and exp["law_b"] == pytest.approx(0.95, abs=0.003)
    line = law_comparison(*_noisy("linear", 0))
    assert line["law_linear_slope"] == pytest.approx(-0.3, abs=0.005)
    assert line["law_linear_intercept"] == pytest.approx(0.8, abs=0.003)
    power = law_comparison(*_noisy("power", 0))
    assert power["law_power_a"] == pytest.approx(0.25, abs=0.005)
    assert power["law_power_b"] == pytest.approx(0.9, abs=0.003)
    assert power["law_power_c"] == pytest.approx(2.5, abs=0.05)
    assert power["law_r2_power"] > 0.999 > power["law_r2"]


@pytest.mark.parametrize("truth", ["exp", "power"])
def test_aic_and_forecast_pick_the_true_law_on_clean_data(truth):
    for seed in range(8):
        result = law_comparison(*_noisy(truth, seed))
        assert result["law_best_aic"] == truth and result["law_best_forecast"] == truth
    if truth == "exp":
        assert result["law_delta_aic_linear"] > 10 and result["law_delta_aic_power"] > 10
        assert result["law_delta_forecast_rmse_linear"] > 0 and result["law_forecast_r2"] > 0.9


def test_aic_charges_the_power_law_for_the_line_it_nests():
    """On a true line the power law (c = 1 is the line) fits at least as well in-sample; AIC's extra parameter
    makes the line win unless the noise happens to favour the curve (about one seed in five)."""
    best = [law_comparison(*_noisy("linear", seed, sigma=0.01))["law_best_aic"] for seed in range(12)]
    assert best.count("linear") >= 8 and "exp" not in best
    exact = law_comparison(np.linspace(1.6, 0.02, 40), TRUTHS["linear"](np.linspace(1.6, 0.02, 40)))
    assert exact["law_best_aic"] == "linear" and exact["law_delta_aic_power"] - exact["law_delta_aic_linear"] == \
        pytest.approx(2.0, abs=0.5)  # equal residuals: the power law pays its one extra parameter


def test_aic_by_hand():
    from covgym.measure.law_models import aic

    residuals = np.array([0.1, -0.2, 0.05, 0.0, 0.15])
    rss = float((residuals**2).sum())
    log_likelihood = float(np.sum(-0.5 * np.log(2 * np.pi * rss / 5) - residuals**2 / (2 * rss / 5)))
    # the constant n·(ln 2π + 1) is the same for every model on the same points, so it is dropped
    assert aic(rss, 5, 2) == pytest.approx(-2 * log_likelihood + 2 * 3 - 5 * (np.log(2 * np.pi) + 1))


def test_a_failed_fit_is_nan_not_an_exception(monkeypatch):
    from covgym.measure import law_models

    entropy, reward = _noisy("exp", 0, points=12)
    assert np.isnan(law_models.fit_law(law_models.MODELS[2], entropy[:3], reward[:3])).all()  # 3 points, 3 params
    negative = law_comparison(entropy - 1.0, reward)  # H^c undefined below zero: only the power law fails
    assert math.isnan(negative["law_r2_power"]) and math.isnan(negative["law_aic_power"])
    assert negative["law_best_aic"] in ("exp", "linear") and math.isfinite(negative["law_r2"])

    def broken(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr("scipy.optimize.curve_fit", broken)
    result = law_comparison(entropy, reward)  # falls back on the least-squares start, which is exact here
    assert result["law_a"] == pytest.approx(0.12, abs=0.01) and math.isfinite(result["law_forecast_rmse_power"])


def test_forecast_is_fitted_on_the_first_half_only():
    entropy, reward = _noisy("exp", 3, sigma=0.02, points=20)
    reward[10:] += 0.1  # the end departs from the law: a forecast that saw it would not miss it
    design = np.stack([-np.exp(entropy[:10]), np.ones(10)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, reward[:10], rcond=None)
    slope, intercept = np.polyfit(entropy[:10], reward[:10], 1)
    result = law_comparison(entropy, reward)
    assert result["law_forecast_points"] == 10
    expected = np.sqrt(np.mean((reward[10:] - b + a * np.exp(entropy[10:])) ** 2))
    assert result["law_forecast_rmse"] == pytest.approx(expected)
    assert result["law_forecast_rmse_linear"] == pytest.approx(
        np.sqrt(np.mean((reward[10:] - slope * entropy[10:] - intercept) ** 2)))
