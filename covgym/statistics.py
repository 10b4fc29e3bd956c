"""Statistics a reviewer accepts for a comparison of methods over seeds, and the entropy–reward law tests.

- ``mean_ci``: mean and Student-t 95 % confidence interval over seeds.
- ``paired_difference``: a method minus the baseline *on the same seeds* (same model, data and rollout seeds, so
  the seed-to-seed variation that both share cancels), with its t-interval.
- ``law_comparison``: fits ``R = −a·exp(H) + b`` (Cui et al. 2025) and the best straight line ``R = c·H + d`` on
  the same (windowed) points, and the paper's forecasting claim: fit the first half of a run, predict the second.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))])


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> dict[str, Any]:
    """``{"mean", "ci_low", "ci_high", "half_width", "n"}`` over the finite values (interval nan below 2)."""
    from scipy import stats

    present = _clean(values)
    n = int(present.size)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "half_width": None, "n": 0}
    mean = float(present.mean())
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "half_width": None, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * present.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "half_width": half, "n": n}


def paired_difference(method: dict[int, float | None], baseline: dict[int, float | None],
                      level: float = 0.95) -> dict[str, Any]:
    """Mean and t-interval of ``method[seed] − baseline[seed]`` over the seeds both have (``seeds`` lists them)."""
    seeds = sorted(s for s in method.keys() & baseline.keys()
                   if method[s] is not None and baseline[s] is not None
                   and math.isfinite(float(method[s])) and math.isfinite(float(baseline[s])))
    result = mean_ci([float(method[s]) - float(baseline[s]) for s in seeds], level)
    result["seeds"] = seeds
    return result


def windowed(values: Sequence[float], window: int) -> np.ndarray:
    """Means of consecutive non-overlapping windows of ``window`` points (a last partial window is dropped); fewer
    points than one window are returned as they are. Per-step rewards are noisy, a window's mean much less so."""
    array = np.asarray(values, dtype=float)
    if window <= 1 or array.size < window:
        return array
    usable = array.size - array.size % window
    return array[:usable].reshape(-1, window).mean(axis=1)


def _r2(actual: np.ndarray, predicted: np.ndarray) -> float:
    total = float(((actual - actual.mean()) ** 2).sum())
    return 1.0 - float(((actual - predicted) ** 2).sum()) / total if total > 0 else math.nan


def law_comparison(entropy: Sequence[float], reward: Sequence[float], window: int = 1) -> dict[str, float]:
    """The entropy law against a straight line, in-sample and as a forecast.

    Points are (mean entropy, mean reward) over windows of ``window`` training steps, in training order.

    Returns:
        ``law_a``, ``law_b``, ``law_r2`` (fit of ``R = −a·exp(H) + b`` on all points), ``law_r2_linear`` (best
        line on the same points: a law that is no better than a line says nothing), ``law_forecast_r2`` and
        ``law_forecast_r2_linear`` (each fitted on the first half, scored by R² on the second half around its
        own mean), ``law_entropy_range`` (max − min entropy of the points) and ``law_points``. Values that cannot
        be computed (fewer than 4 points, no spread) are nan.
    """
    from covgym.metrics import fit_entropy_law

    h = windowed(entropy, window)
    r = windowed(reward, window)
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    nan = math.nan
    result = {"law_a": nan, "law_b": nan, "law_r2": nan, "law_r2_linear": nan, "law_forecast_r2": nan,
              "law_forecast_r2_linear": nan, "law_entropy_range": float(np.ptp(h)) if h.size else nan,
              "law_points": float(h.size)}
    if h.size < 4 or np.ptp(h) == 0:
        return result
    a, b, r2 = fit_entropy_law(h, r)
    slope, intercept = np.polyfit(h, r, 1)
    result.update(law_a=a, law_b=b, law_r2=r2, law_r2_linear=_r2(r, slope * h + intercept))
    half = h.size // 2
    first_h, first_r, rest_h, rest_r = h[:half], r[:half], h[half:], r[half:]
    if half >= 4 and h.size - half >= 4 and np.ptp(first_h) > 0:  # two parameters need more than two points
        a1, b1, _ = fit_entropy_law(first_h, first_r)
        result["law_forecast_r2"] = _r2(rest_r, b1 - a1 * np.exp(rest_h))
        slope1, intercept1 = np.polyfit(first_h, first_r, 1)
        result["law_forecast_r2_linear"] = _r2(rest_r, slope1 * rest_h + intercept1)
    return result
