"""Quantile Advantage Estimation (Wu et al., 2025): the group baseline at the K-quantile of its rewards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.lazy import torch

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import broadcast_over_response
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.batch import RolloutBatch


@register
@dataclass
class QuantileBaselineEstimator(Estimator):
    """``A_i = (score_i − q_K(group)) / (std_g + ε)``, ``q_K`` the K-quantile of the group's scores.

    The quantile interpolates linearly between order statistics (numpy's default), so K = 0.5 is the group
    median. With 0/1 rewards and success rate p the baseline is 0 when p < 1 − K (only successes move: rare
    successes are reinforced) and 1 when p > 1 − K (only failures move), which is the paper's two-regime gate. The
    std is unbiased, as GRPO's; a group of one uses baseline 0 and std 1 (GRPO's convention).
    """

    name = "quantile_baseline"
    description = "Group baseline at the K-quantile of the group's rewards (QAE)"
    source = "Wu et al. 2025 (Quantile Advantage Estimation, arXiv 2509.22611)"
    advantage_invariants = ("shift_invariant",)

    baseline_quantile: float = hyperparameter(0.5, "K, the quantile of the group's rewards used as baseline")
    norm_adv_by_std_in_grpo: bool = hyperparameter(True, "divide by the group's std, as GRPO")
    epsilon: float = hyperparameter(1e-6, "added to the group std before dividing")

    def validate(self) -> None:
        if not 0.0 <= self.baseline_quantile <= 1.0:
            raise ValueError(f"baseline_quantile must be in [0, 1], got {self.baseline_quantile}")

    def compute(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1).double()  # [B]
        baseline = torch.zeros_like(scores)
        scale = torch.ones_like(scores)
        for group in torch.unique(batch.group_ids):
            members = batch.group_ids == group
            values = scores[members]
            if values.numel() < 2:
                continue
            baseline[members] = torch.quantile(values, self.baseline_quantile)
            if self.norm_adv_by_std_in_grpo:
                scale[members] = values.std() + self.epsilon
        return broadcast_over_response(((scores - baseline) / scale).float(), batch.response_mask)
