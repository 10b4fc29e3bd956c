"""Public path of the rollout batch: ``from covgym.batch import RolloutBatch`` (it lives in ``covgym.core.batch``)."""

from covgym.core.batch import RolloutBatch

__all__ = ["RolloutBatch"]
