"""GPG's estimator: an α-rescaled group baseline (Chu et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.distributed import all_reduce_sum
from covgym.algorithms.functional import broadcast_over_response, group_mean
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class GPGEstimator(Estimator):
    """``A_i = α·(score_i − mean_g) / f_norm`` with ``α = B / #(sequences with a non-zero score)``.

    ``B`` and the count are over the global batch (all ranks). A group of one uses mean 0. As verl's ``gpg``.
    """

    name = "gpg"
    advantage_invariants = ("zero_mean_per_group",)  # α counts non-zero scores: a shift changes it  # checked by covgym.testing.check_algorithm
    description = "α-rescaled group baseline (GPG)"
    source = "Chu et al. 2025 (GPG); verl compute_gpg_outcome_advantage"
    advantage_invariants = ("zero_mean_per_group",)

    f_norm: float = hyperparameter(1.0, "divisor of the GPG advantage")

    def validate(self) -> None:
        if self.f_norm <= 0:
            raise ValueError(f"f_norm must be > 0, got {self.f_norm}")

    def compute(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1).double()  # [B]
        counts = all_reduce_sum(torch.tensor([scores.numel(), int((scores != 0).sum())], dtype=torch.float64))
        alpha = float(counts[0]) / max(float(counts[1]), 1.0)
        per_sequence = alpha * (scores - group_mean(scores, batch.group_ids)) / self.f_norm
        return broadcast_over_response(per_sequence.float(), batch.response_mask)
