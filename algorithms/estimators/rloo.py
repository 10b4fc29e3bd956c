"""RLOO: REINFORCE leave-one-out baseline per group (Ahmadian et al., 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.functional import broadcast_over_response, rloo_advantages
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class RLOOEstimator(Estimator):
    """``A_i = score_i − mean_{j≠i} score_j`` over the group (``n/(n−1)·(score_i − mean_g)``).

    A group of one keeps its raw score as advantage (no baseline available), as verl's ``rloo`` does.
    """

    name = "rloo"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")  # checked by covgym.testing.check_algorithm
    description = "Leave-one-out group baseline (no std normalisation)"
    source = "Ahmadian et al. 2024 (Back to Basics); verl compute_rloo_outcome_advantage"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")

    def compute(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        return broadcast_over_response(rloo_advantages(scores, batch.group_ids), batch.response_mask)
