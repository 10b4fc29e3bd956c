"""Candidate laws of reward against entropy, fitted, scored by AIC and by forecast.

Cui et al. (2025) claim ``R = −a·exp(H) + b`` and that it forecasts: fitted on the early, high-entropy part of a
run it predicts the reward reached once entropy has fallen. Over 0.2–0.7 nats ``exp(H)`` is nearly a straight
line, so the law is tested only against rivals and only where they disagree. The rivals:

- ``linear``: ``R = c·H + d``: the null model; a law no better than a line says nothing.
- ``power``: ``R = b − a·H^c`` (``c`` in [0.05, 10]): the saturating alternative. For ``c > 1`` the reward levels
  off as entropy runs out (dR/dH → 0 at H → 0: the last nats buy nothing, diminishing returns), for ``c < 1`` the
  last nats buy the most; ``c = 1`` is the line, so the family nests the null model and AIC charges it one
  parameter for its curvature. The exp law instead keeps a finite, non-zero slope ``−a`` at H = 0, so the two
  part ways exactly at the low-entropy end the forecast is about. Entropy is ≥ 0, so ``H^c`` is always defined.

Each model is fitted by least squares with ``scipy.optimize.curve_fit`` from an exact starting point (the models
are linear in all parameters but ``c``, which is profiled over a grid first); a fit that fails gives nan.
AIC with Gaussian residuals of unknown variance: ``n·ln(RSS/n) + 2(k + 1)``, k the model's parameters and one for
the residual variance (exp 2 + 1, line 2 + 1, power 3 + 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

POWER_EXPONENT_BOUNDS = (0.05, 10.0)


def exp_law(h: np.ndarray, a: float, b: float) -> np.ndarray:
    """The paper's law ``R = −a·exp(H) + b``."""
    return b - a * np.exp(h)


def linear_law(h: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """The null model ``R = slope·H + intercept``."""
    return slope * h + intercept


def power_law(h: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """The saturating alternative ``R = b − a·H^c``."""
    return b - a * np.power(h, c)


@dataclass(frozen=True)
class LawModel:
    """A named model ``function(h, *params)`` with its parameter names (their count enters AIC)."""

    name: str
    function: Callable[..., np.ndarray]
    params: tuple[str, ...]


MODELS = (LawModel("exp", exp_law, ("a", "b")), LawModel("linear", linear_law, ("slope", "intercept")),
          LawModel("power", power_law, ("a", "b", "c")))


def _linear_solve(feature: np.ndarray, r: np.ndarray) -> tuple[float, float, float]:
    """Least squares of ``r ≈ w·feature + v``: ``(w, v, rss)``."""
    design = np.stack([feature, np.ones_like(feature)], axis=1)
    (w, v), *_ = np.linalg.lstsq(design, r, rcond=None)
    return float(w), float(v), float(((r - w * feature - v) ** 2).sum())


def _initial_guess(model: LawModel, h: np.ndarray, r: np.ndarray) -> tuple[list[float], tuple] | None:
    """An exact or profiled least-squares start and the bounds for ``curve_fit``; None where none exists."""
    if model.name == "exp":
        w, v, _ = _linear_solve(np.exp(h), r)
        return [-w, v], (-np.inf, np.inf)
    if model.name == "linear":
        w, v, _ = _linear_solve(h, r)
        return [w, v], (-np.inf, np.inf)
    if np.any(h < 0):
        return None
    low, high = POWER_EXPONENT_BOUNDS
    best = None
    for c in np.geomspace(low, high, 49):  # profile: for fixed c the model is linear in (a, b)
        w, v, rss = _linear_solve(np.power(h, c), r)
        if best is None or rss < best[0]:
            best = (rss, [-w, v, float(c)])
    return best[1], ([-np.inf, -np.inf, low], [np.inf, np.inf, high])


def fit_law(model: LawModel, h: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Least-squares parameters of ``model`` on the points (nan for each where the fit fails or is
    underdetermined: fewer points than parameters + 1, or no spread in entropy)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    failed = np.full(len(model.params), np.nan)
    if h.size < len(model.params) + 1 or np.ptp(h) == 0 or not (np.all(np.isfinite(h)) and np.all(np.isfinite(r))):
        return failed
    start = _initial_guess(model, h, r)
    if start is None:
        return failed
    p0, bounds = start
    try:
        with warnings.catch_warnings():  # "covariance could not be estimated": only the parameters are used
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(model.function, h, r, p0=p0, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return np.asarray(p0, dtype=float)  # the start is itself an (exact or profiled) least-squares fit
    params = np.asarray(params, dtype=float)
    if rss(model, params, h, r) > rss(model, np.asarray(p0, dtype=float), h, r):  # never worse than the start
        params = np.asarray(p0, dtype=float)
    return params if np.all(np.isfinite(params)) else failed


def rss(model: LawModel, params: np.ndarray, h: np.ndarray, r: np.ndarray) -> float:
    """Residual sum of squares (nan for failed parameters)."""
    with np.errstate(all="ignore"):
        return float(((r - model.function(h, *params)) ** 2).sum())


def aic(residual_sum: float, n: int, parameters: int) -> float:
    """Gaussian AIC ``n·ln(RSS/n) + 2(k + 1)``: k regression parameters plus the residual variance. RSS is floored
    at the smallest normal float so that an exact fit gives a very low, finite number rather than −inf."""
    if not math.isfinite(residual_sum) or n <= 0:
        return math.nan
    return n * math.log(max(residual_sum, np.finfo(float).tiny) / n) + 2 * (parameters + 1)


def r_squared(actual: np.ndarray, predicted: np.ndarray) -> float:
    """1 − SSE/SST around the mean of ``actual`` (nan when it is constant or a prediction is not finite)."""
    total = float(((actual - actual.mean()) ** 2).sum())
    if total <= 0 or not np.all(np.isfinite(predicted)):
        return math.nan
    return 1.0 - float(((actual - predicted) ** 2).sum()) / total


def best_of(scores: dict[str, float]) -> str | None:
    """The name with the lowest finite score (None if none is finite)."""
    finite = {name: score for name, score in scores.items() if math.isfinite(score)}
    return min(finite, key=finite.get) if finite else None


def in_sample(h: np.ndarray, r: np.ndarray) -> dict[str, dict[str, float | np.ndarray]]:
    """Per model: ``params``, ``r2`` and ``aic`` of the fit on all points."""
    result = {}
    for model in MODELS:
        params = fit_law(model, h, r)
        residual_sum = rss(model, params, h, r)
        predicted = model.function(h, *params) if np.all(np.isfinite(params)) else np.full_like(r, np.nan)
        result[model.name] = {"params": params, "r2": r_squared(r, predicted),
                              "aic": aic(residual_sum, h.size, len(model.params))}
    return result


def forecast(h: np.ndarray, r: np.ndarray, fit_points: int) -> dict[str, dict[str, float]]:
    """Per model: fitted on the first ``fit_points`` points, ``rmse`` and ``r2`` (around the held-out mean) of its
    prediction of the rest."""
    fit_h, fit_r, rest_h, rest_r = h[:fit_points], r[:fit_points], h[fit_points:], r[fit_points:]
    result = {}
    for model in MODELS:
        params = fit_law(model, fit_h, fit_r)
        if np.all(np.isfinite(params)) and rest_h.size:
            predicted = model.function(rest_h, *params)
            rmse = float(np.sqrt(np.mean((rest_r - predicted) ** 2)))
            result[model.name] = {"rmse": rmse if math.isfinite(rmse) else math.nan,
                                  "r2": r_squared(rest_r, predicted)}
        else:
            result[model.name] = {"rmse": math.nan, "r2": math.nan}
    return result
