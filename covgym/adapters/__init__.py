"""Adapters that take covgym's environments and losses into other RL engines.

- ``covgym.adapters.trl``: any covgym algorithm inside TRL's ``GRPOTrainer`` (``CovgymGRPOTrainer``, and
  ``covgym train --engine trl``, which writes covgym's run directory), and a single-turn env as a prompt dataset
  and a reward function for TRL's own trainer (optional extra: ``pip install 'covgym[trl]'``).
- ``covgym.adapters.verl``: covgym's policy losses (and loss-side compositions) registered into verl's policy-loss
  registry, its estimators into verl's advantage-estimator registry (``verl_estimators``), and a ``compute_score``
  that makes covgym's graders a verl custom reward function (verl installed separately).

Neither engine is imported until its adapter is used, so ``import covgym`` never needs them.
"""

#: covgym packages this package may import: adapters sit on top, beside the command line, and may use any package
#: (checked by tests/test_layout.py).
MAY_IMPORT: tuple[str, ...] = ("covgym.core", "covgym.distributed", "covgym.envs", "covgym.algorithms",
                               "covgym.models", "covgym.measure", "covgym.train", "covgym.benchmark")


