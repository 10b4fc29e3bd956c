"""Quantile Advantage Estimation (Wu et al., 2025): the group baseline at the K-quantile of its rewards."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import broadcast_over_response
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class QuantileBaselineEstimator(Estimator):
    """``A_i = (score_i − b_K(group)) / (std_g + ε)``, ``b_K`` the K-quantile of the group's scores.

    The paper defines the baseline as the empirical quantile ``b_K = inf{x : F̂(x) ≥ K}`` (QAE, arXiv 2509.22611,
    §3): an order statistic, the ``⌈K·n⌉``-th smallest of the group's ``n`` scores. With 0/1 rewards and success rate
    ``p`` that is 0 when ``p ≤ 1 − K`` (only successes move: rare successes are reinforced) and 1 when
    ``p > 1 − K`` (only failures move): the paper's two-regime gate, exact at its boundary. E.g. K = 0.4, 5 of 8
    correct: ``F̂(0) = 3/8 < 0.4``, baseline 1, successes get 0; K = 0.5, 4 of 8: ``F̂(0) = 1/2``, baseline 0.
    ``baseline_quantile_method="linear"`` instead interpolates between order statistics as the authors' released
    code does (``torch.quantile``, junkangwu/QAE verl/trainer/ppo/core_algos.py), which moves both sides at the
    boundary (K = 0.4, 5 of 8: baseline 0.8). K = 0.4 is the paper's recipe (``quantile_k=0.4`` in its scripts).
    The std is unbiased, as GRPO's; a group of one uses baseline 0 and std 1 (GRPO's convention).
    """

    name = "quantile_baseline"
    description = "Group baseline at the K-quantile of the group's rewards (QAE)"
    source = "Wu et al. 2025 (Quantile Advantage Estimation, arXiv 2509.22611)"
    advantage_invariants = ("shift_invariant",)

    baseline_quantile: float = hyperparameter(0.4, "K, the quantile of the group's rewards used as baseline")
    baseline_quantile_method: str = hyperparameter(
        "inverse_cdf", "inverse_cdf: the order statistic inf{x: F(x) >= K} (the paper); linear: torch.quantile")
    norm_adv_by_std_in_grpo: bool = hyperparameter(True, "divide by the group's std, as GRPO")
    epsilon: float = hyperparameter(1e-6, "added to the group std before dividing")

    def validate(self) -> None:
        if not 0.0 <= self.baseline_quantile <= 1.0:
            raise ValueError(f"baseline_quantile must be in [0, 1], got {self.baseline_quantile}")
        if self.baseline_quantile_method not in ("inverse_cdf", "linear"):
            raise ValueError(f"baseline_quantile_method must be inverse_cdf or linear, got "
                             f"{self.baseline_quantile_method!r}")

    def baseline(self, values: Tensor) -> Tensor:
        """The K-quantile of one group's scores ``[n]`` (n >= 2)."""
        if self.baseline_quantile_method == "linear":
            return torch.quantile(values, self.baseline_quantile)
        rank = max(1, math.ceil(self.baseline_quantile * values.numel() - 1e-9))  # F̂(x_(r)) = r/n >= K first at r
        return torch.sort(values).values[rank - 1]

    def compute(self, batch: RolloutBatch) -> Tensor:
        scores = batch.outcome_token_rewards().sum(-1).double()  # [B]
        baseline = torch.zeros_like(scores)
        scale = torch.ones_like(scores)
        for group in torch.unique(batch.group_ids):
            members = batch.group_ids == group
            values = scores[members]
            if values.numel() < 2:
                continue
            baseline[members] = self.baseline(values)
            if self.norm_adv_by_std_in_grpo:
                scale[members] = values.std() + self.epsilon
        return broadcast_over_response(((scores - baseline) / scale).float(), batch.response_mask)
