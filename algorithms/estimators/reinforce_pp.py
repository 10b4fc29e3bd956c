"""REINFORCE++ with a group baseline (Hu et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.functional import reinforce_pp_baseline_advantages
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class ReinforcePPEstimator(Estimator):
    """Subtract the group mean score, then whiten over all response tokens of the batch (token-weighted)."""

    name = "reinforce_pp"
    advantage_invariants = ("shift_invariant",)  # whitened over the batch: a group mean is not 0  # checked by covgym.testing.check_algorithm
    description = "Group-mean baseline, then batch-wide whitening (REINFORCE++-baseline)"
    source = "Hu et al. 2025 (REINFORCE++); verl compute_reinforce_plus_plus_baseline_outcome_advantage"

    def compute(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        return reinforce_pp_baseline_advantages(scores, batch.group_ids, batch.response_mask)
