"""Benchmarking and figures: sweeps of methods × seeds on equal budgets, the mechanism suite, and every plot.

Owns the sweep runner (``sweep``), the mechanism testbed's spec (``mechanism``), the ``covgym bench`` command
(``command``), the summary tables with confidence intervals (``summary``), budget fairness checks, and the
figures of a run or a sweep (``plotting``, ``sweep_figures``, one colour per method from ``palette``). It may
import everything below it; only the command line and the demo import it.
"""

MAY_IMPORT: tuple[str, ...] = ("covgym.core", "covgym.distributed", "covgym.envs", "covgym.algorithms",
                               "covgym.models", "covgym.measure", "covgym.train")
