"""Statistics a reviewer accepts for a comparison of methods over seeds, and the entropy–reward law tests.

- ``mean_ci``: mean and Student-t 95 % confidence interval over seeds.
- ``paired_difference``: a method minus the baseline *on the same seeds* (same model, data and rollout seeds, so
  the seed-to-seed variation that both share cancels), with its t-interval.
- ``law_comparison``: fits ``R = −a·exp(H) + b`` (Cui et al. 2025), the best straight line ``R = c·H + d`` and a
  saturating power law ``R = b − a·H^c`` on the same (windowed) points, compares them by AIC, and tests the
  paper's forecasting claim: fit the first half of a run, predict the rest (``covgym.measure.law_models``).
- Power of the seed-paired comparisons (p-values, Holm, minimum detectable effect, seeds needed) lives in
  ``covgym.measure.power``.
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
    """Mean and t-interval of ``method[seed] − baseline[seed]`` over the seeds both have (``seeds`` lists them,
    ``differences`` holds the per-seed differences in that order)."""
    seeds = sorted(s for s in method.keys() & baseline.keys()
                   if method[s] is not None and baseline[s] is not None
                   and math.isfinite(float(method[s])) and math.isfinite(float(baseline[s])))
    differences = [float(method[s]) - float(baseline[s]) for s in seeds]
    result = mean_ci(differences, level)
    result["seeds"] = seeds
    result["differences"] = differences
    return result


def windowed(values: Sequence[float], window: int) -> np.ndarray:
    """Means of consecutive non-overlapping windows of ``window`` points (a last partial window is dropped); fewer
    points than one window are returned as they are. Per-step rewards are noisy, a window's mean much less so."""
    array = np.asarray(values, dtype=float)
    if window <= 1 or array.size < window:
        return array
    usable = array.size - array.size % window
    return array[:usable].reshape(-1, window).mean(axis=1)


def law_comparison(entropy: Sequence[float], reward: Sequence[float], window: int = 1,
                   fit_fraction: float = 0.5) -> dict[str, float | str | None]:
    """The entropy law against a straight line and a saturating power law, by AIC and as a forecast.

    Points are (mean entropy, mean reward) over windows of ``window`` training steps, in training order. The
    models and why these are in ``covgym.measure.law_models``.

    Returns (nan where a value cannot be computed: fewer than 4 points, no spread, a failed fit):
        - exp law on all points: ``law_a``, ``law_b``, ``law_r2``, ``law_aic``;
        - line: ``law_linear_slope``, ``law_linear_intercept``, ``law_r2_linear``, ``law_aic_linear``;
        - power ``R = b − a·H^c``: ``law_power_a``, ``law_power_b``, ``law_power_c``, ``law_r2_power``,
          ``law_aic_power``;
        - ``law_delta_aic_linear`` = AIC(line) − AIC(exp) and ``law_delta_aic_power`` = AIC(power) − AIC(exp):
          positive favours the exp law (a difference above 2 is the usual threshold for "supported");
        - the forecast (fit on the first ``fit_fraction`` of the points, predict the rest; needs ≥ 4 points on
          each side): ``law_forecast_r2`` / ``_linear`` / ``_power`` (R² around the held-out mean),
          ``law_forecast_rmse`` / ``_linear`` / ``_power``, and ``law_delta_forecast_rmse_linear`` /
          ``_power`` (the rival's RMSE minus the exp law's: positive favours exp);
        - ``law_best_aic`` and ``law_best_forecast``: the winning model's name (None where none was scored);
        - ``law_entropy_range`` (max − min entropy), ``law_points`` and ``law_forecast_points`` (held-out points).
    """
    from covgym.measure.law_models import best_of, forecast, in_sample

    h = windowed(entropy, window)
    r = windowed(reward, window)
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    nan = math.nan
    result: dict[str, float | str | None] = {
        "law_a": nan, "law_b": nan, "law_r2": nan, "law_aic": nan,
        "law_linear_slope": nan, "law_linear_intercept": nan, "law_r2_linear": nan, "law_aic_linear": nan,
        "law_power_a": nan, "law_power_b": nan, "law_power_c": nan, "law_r2_power": nan, "law_aic_power": nan,
        "law_delta_aic_linear": nan, "law_delta_aic_power": nan,
        "law_forecast_r2": nan, "law_forecast_r2_linear": nan, "law_forecast_r2_power": nan,
        "law_forecast_rmse": nan, "law_forecast_rmse_linear": nan, "law_forecast_rmse_power": nan,
        "law_delta_forecast_rmse_linear": nan, "law_delta_forecast_rmse_power": nan,
        "law_best_aic": None, "law_best_forecast": None,
        "law_entropy_range": float(np.ptp(h)) if h.size else nan, "law_points": float(h.size),
        "law_forecast_points": 0.0}
    if h.size < 4 or np.ptp(h) == 0:
        return result
    fits = in_sample(h, r)
    (a, b), (slope, intercept), (pa, pb, pc) = (fits[m]["params"] for m in ("exp", "linear", "power"))
    result.update(law_a=float(a), law_b=float(b), law_linear_slope=float(slope), law_linear_intercept=float(intercept),
                  law_power_a=float(pa), law_power_b=float(pb), law_power_c=float(pc))
    for name, suffix in (("exp", ""), ("linear", "_linear"), ("power", "_power")):
        result[f"law_r2{suffix}"] = fits[name]["r2"]
        result[f"law_aic{suffix}"] = fits[name]["aic"]
    result["law_delta_aic_linear"] = fits["linear"]["aic"] - fits["exp"]["aic"]
    result["law_delta_aic_power"] = fits["power"]["aic"] - fits["exp"]["aic"]
    result["law_best_aic"] = best_of({name: fit["aic"] for name, fit in fits.items()})
    fit_points = int(h.size * fit_fraction)
    rest = h.size - fit_points
    if fit_points >= 4 and rest >= 4 and np.ptp(h[:fit_points]) > 0:
        scores = forecast(h, r, fit_points)
        for name, suffix in (("exp", ""), ("linear", "_linear"), ("power", "_power")):
            result[f"law_forecast_r2{suffix}"] = scores[name]["r2"]
            result[f"law_forecast_rmse{suffix}"] = scores[name]["rmse"]
        result["law_delta_forecast_rmse_linear"] = scores["linear"]["rmse"] - scores["exp"]["rmse"]
        result["law_delta_forecast_rmse_power"] = scores["power"]["rmse"] - scores["exp"]["rmse"]
        result["law_best_forecast"] = best_of({name: score["rmse"] for name, score in scores.items()})
        result["law_forecast_points"] = float(rest)
    return result
