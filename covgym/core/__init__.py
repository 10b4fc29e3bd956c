"""The data every layer shares: the rollout batch, masked token statistics, and the lazy torch import.

Owns ``RolloutBatch`` (what one training step's rollouts are), the masked means, variances and token covariances
that algorithms and metrics both compute, and ``lazy`` (torch on first use, so ``import covgym`` stays light).
It imports nothing else from covgym: everything else may import it.
"""

#: covgym packages this package may import (read by tests/test_layout.py, which fails on any other).
MAY_IMPORT: tuple[str, ...] = ()
