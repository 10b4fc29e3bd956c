"""Measurement and the mechanism: what a step did to entropy, and the statistics that judge a comparison.

Owns the per-step training metrics (entropy percentiles, Cov(log π, A), polarity), the entropy-dynamics probe
(predicted vs actual ΔH), the first-order theory of the paper (``theory``: exact softmax references), and the
statistics of runs and sweeps (confidence intervals, paired tests, power, the entropy-performance law fits).
It may import the shared data and the algorithms (theory computes an algorithm's logit update); the trainer and
the benchmark import it, not the other way round.
"""

MAY_IMPORT: tuple[str, ...] = ("covgym.core", "covgym.algorithms")
