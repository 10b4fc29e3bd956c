"""REINFORCE++ with a group baseline (Hu et al., 2025), with the PPO-clip surrogate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

from covgym.batch import RolloutBatch
from covgym.algorithms.base import Algorithm, register
from covgym.algorithms.functional import reinforce_pp_baseline_advantages


@register
@dataclass
class ReinforcePP(Algorithm):
    """REINFORCE++-baseline: subtract the group mean score, then whiten over all response tokens of the batch.

    The whitening is global (over the batch, token-weighted), unlike GRPO's per-group std.
    """

    name = "reinforce_pp"
    description = "Group-mean baseline, then batch-wide whitening (REINFORCE++-baseline) + PPO-clip"
    source = "Hu et al. 2025 (REINFORCE++); verl compute_reinforce_plus_plus_baseline_outcome_advantage"

    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        return reinforce_pp_baseline_advantages(scores, batch.group_ids, batch.response_mask)
