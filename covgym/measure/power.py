"""Power of a seed-paired comparison: is a difference real, and could this many seeds have seen one?

A benchmark over a handful of seeds mostly finds nothing; "nothing" means something only next to the effect the
design could have found. For the differences ``d_s = method_s − baseline_s`` over ``n`` shared seeds:

- ``paired_t_test``: two-sided p-value of the paired t-test, ``t = mean(d) / (sd(d) / √n)`` on ``n − 1`` df.
- ``holm``: Holm's step-down adjustment over a family of p-values (here: every method against the baseline, one
  family per metric), which controls the family-wise error rate without assuming independence.
- ``paired_t_power``: exact power of that test against a true mean difference δ, from the noncentral t with
  noncentrality ``δ·√n / σ``: ``P(T > t_crit) + P(T < −t_crit)``. The normal approximation overstates power
  badly at the seed counts benchmarks afford (at n = 5 it promises 80 % where the t-test has 56 %).
- ``minimum_detectable_effect``: the |δ| at which that power is 80 % (solved with ``scipy.optimize.brentq``).
- ``seeds_needed``: the smallest n at which a given δ is detected with 80 % power, σ taken as measured.

σ is the measured standard deviation of the paired differences: an estimate, so MDE and seeds-needed are
estimates too (planning numbers, not guarantees).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 100_000  # seeds_needed answers None beyond this: the effect is out of reach


def paired_t_test(differences: Sequence[float]) -> float | None:
    """Two-sided p-value of the paired (one-sample) t-test of mean zero; None below two values.

    Differences that are all equal have no spread: p = 0 if they are not zero, 1 if they are (scipy would give nan).
    """
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    n = d.size
    if n < 2:
        return None
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0 or not math.isfinite(sd):
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (sd / math.sqrt(n))
    return float(2.0 * stats.t.sf(abs(t), n - 1))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; None entries are left out of the family and stay None.

    Sorted ascending, the i-th smallest (1-based) is multiplied by ``m − i + 1``, capped at 1, and made monotone
    by a running maximum; a hypothesis is rejected at level α exactly when its adjusted p-value is ≤ α.
    """
    present = [(p, i) for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    m = len(present)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def paired_t_power(effect: float, sd: float, n: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs against a true mean ``effect``
    when the differences have standard deviation ``sd`` (noncentral t; ``n`` may be fractional for solvers)."""
    from scipy import stats

    if n < 2:
        return math.nan
    df = n - 1.0
    critical = stats.t.ppf(1.0 - alpha / 2.0, df)
    if sd == 0.0:
        return 1.0 if effect != 0.0 else alpha
    noncentrality = abs(effect) * math.sqrt(n) / sd
    upper = float(stats.nct.sf(critical, df, noncentrality))
    lower = float(stats.nct.cdf(-critical, df, noncentrality))
    if not math.isfinite(lower):  # scipy's nct gives nan far in the tail; the tail is below P(T < 0) = Φ(−δ)
        lower = 0.0 if stats.norm.cdf(-noncentrality) < 1e-12 else math.nan
    total = upper + lower
    return min(1.0, total) if math.isfinite(total) else math.nan


def minimum_detectable_effect(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float | None:
    """The smallest |mean difference| that the paired t-test with ``n`` seeds detects with ``power``; None below
    two seeds or without a finite ``sd``. Exactly proportional to ``sd``: solved once for σ = 1."""
    from scipy.optimize import brentq

    if n < 2 or sd is None or not math.isfinite(sd):
        return None
    if sd == 0.0:
        return 0.0
    upper = 1.0
    while paired_t_power(upper, 1.0, n, alpha) < power:  # power → 1 as the effect grows, for any n ≥ 2
        upper *= 2.0
    try:
        standardized = brentq(lambda d: paired_t_power(d, 1.0, n, alpha) - power, 0.0, upper, xtol=1e-10)
    except ValueError:  # a nan from scipy's noncentral t: no answer rather than a crash of the summary
        return None
    return float(standardized * sd)


def seeds_needed(effect: float, sd: float, power: float = POWER, alpha: float = ALPHA,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """Smallest number of seeds n ≥ 2 at which the paired t-test detects a true mean difference ``effect`` with
    ``power``, given differences of standard deviation ``sd``; None for no effect, no finite sd, or beyond
    ``max_seeds``. The continuous root (``brentq`` over n) is rounded up and checked against its neighbours."""
    from scipy.optimize import brentq

    if effect is None or sd is None or not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0.0:
        return None
    if sd == 0.0 or paired_t_power(effect, sd, 2, alpha) >= power:
        return 2
    if paired_t_power(effect, sd, max_seeds, alpha) < power:
        return None
    try:
        root = brentq(lambda n: paired_t_power(effect, sd, n, alpha) - power, 2.0, float(max_seeds), xtol=1e-6)
    except ValueError:  # a nan from scipy's noncentral t
        return None
    n = max(2, math.ceil(root))
    while n > 2 and paired_t_power(effect, sd, n - 1, alpha) >= power:
        n -= 1
    while paired_t_power(effect, sd, n, alpha) < power:
        n += 1
    return n


def power_summary(differences: Sequence[float], target_effect: float | None = None, power: float = POWER,
                  alpha: float = ALPHA) -> dict[str, float | int | None]:
    """The power numbers of one seed-paired comparison: ``p_value`` (paired t-test), ``sd`` of the differences,
    ``mde`` (minimum detectable |effect| at ``power`` with these seeds), ``seeds_needed_observed`` (for the
    observed mean difference to be detected with ``power``, if it were the truth), ``target_effect`` and
    ``seeds_needed_target``; None where a number does not exist (fewer than two seeds, no effect)."""
    d = np.asarray(differences, dtype=float)
    sd = float(d.std(ddof=1)) if d.size >= 2 else None
    return {"p_value": paired_t_test(d), "sd": sd, "mde": minimum_detectable_effect(sd, d.size, power, alpha)
            if sd is not None else None,
            "seeds_needed_observed": seeds_needed(float(d.mean()), sd, power, alpha) if sd is not None else None,
            "target_effect": target_effect,
            "seeds_needed_target": seeds_needed(target_effect, sd, power, alpha)
            if sd is not None and target_effect is not None else None,
            "power": power, "alpha": alpha}
