"""GPG: group policy gradient, a plain REINFORCE loss with a rescaled group baseline (Chu et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

from covgym.batch import RolloutBatch
from covgym.algorithms.base import Algorithm, hyperparameter, register
from covgym.algorithms.distributed import all_reduce_sum
from covgym.algorithms.functional import broadcast_over_response, group_mean


@register
@dataclass
class GPG(Algorithm):
    """GPG: ``A_i = α·(score_i − mean_g) / f_norm`` with ``α = B / #(sequences with a non-zero score)``.

    The loss is ``−A·log π`` (no ratio, no clipping), aggregated by ``loss_agg_mode``; its gradient equals the
    PPO surrogate's at ratio 1. A group of one uses mean 0. As verl's ``gpg`` estimator and loss.
    """

    name = "gpg"
    description = "Group policy gradient: α-rescaled group baseline, plain −A·log π loss"
    source = "Chu et al. 2025 (GPG); verl compute_gpg_outcome_advantage / compute_policy_loss_gpg"

    f_norm: float = hyperparameter(1.0, "divisor of the GPG advantage")

    def validate(self) -> None:
        super().validate()
        if self.f_norm <= 0:
            raise ValueError(f"f_norm must be > 0, got {self.f_norm}")

    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1).double()  # [B]
        counts = all_reduce_sum(torch.tensor([scores.numel(), int((scores != 0).sum())], dtype=torch.float64))
        alpha = float(counts[0]) / max(float(counts[1]), 1.0)  # over the global batch (all ranks)
        per_sequence = alpha * (scores - group_mean(scores, batch.group_ids)) / self.f_norm
        return broadcast_over_response(per_sequence.float(), batch.response_mask)

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        return -log_probs * advantages, {}
