"""GRPO's estimator: group-normalised outcome advantages (Shao et al., 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import broadcast_over_response, group_normalized_advantages
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class GRPOEstimator(Estimator):
    """``A_i = (score_i − mean_g) / (std_g + ε)`` per group, broadcast over the response tokens.

    ``score_i`` is the sum of the sequence's token rewards (its outcome reward); the std is unbiased and a group
    of one uses mean 0, std 1.
    """

    name = "grpo"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")  # checked by covgym.testing.check_algorithm
    description = "Group-relative advantages (mean/std over a prompt's responses)"
    source = "Shao et al. 2024 (DeepSeekMath); verl compute_grpo_outcome_advantage"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")

    norm_adv_by_std_in_grpo: bool = hyperparameter(True, "divide by the group's std (False: Dr. GRPO)")
    epsilon: float = hyperparameter(1e-6, "added to the group std before dividing")

    def compute(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        per_sequence = group_normalized_advantages(scores, batch.group_ids, self.norm_adv_by_std_in_grpo,
                                                   self.epsilon)
        return broadcast_over_response(per_sequence, batch.response_mask)
