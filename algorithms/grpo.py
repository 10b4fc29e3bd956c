"""GRPO: group-normalised outcome advantages with the PPO-clip surrogate (Shao et al., 2024)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from covgym.batch import RolloutBatch
from covgym.algorithms.base import Algorithm, hyperparameter, register
from covgym.algorithms.functional import group_normalized_advantages


@register
@dataclass
class GRPO(Algorithm):
    """GRPO: ``A_i = (score_i − mean_g) / (std_g + ε)`` per group, broadcast over response tokens."""

    name = "grpo"
    description = "Group-relative advantages (mean/std over a prompt's responses) + PPO-clip"

    norm_adv_by_std_in_grpo: bool = hyperparameter(True, "divide by the group's std (False: Dr. GRPO)")
    epsilon: float = hyperparameter(1e-6, "added to the group std before dividing")

    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        per_sequence = group_normalized_advantages(scores, batch.group_ids, self.norm_adv_by_std_in_grpo,
                                                   self.epsilon)
        return per_sequence[:, None].expand_as(batch.response_mask).to(batch.response_mask.dtype)
