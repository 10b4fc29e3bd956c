"""CISPO (MiniMax-M1, 2025): the policy gradient weighted by a clipped, detached importance ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import ratio_and_log_ratio
from covgym.algorithms.parts import ClipRange, PolicyLoss
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class CISPOLoss(ClipRange, PolicyLoss):
    """``L = −sg[clip(r, 1−ε_low, 1+ε_high)]·A·log π`` with ``r = exp(clamp(log π − log π_old, −20, 20))``.

    Unlike PPO-clip no token loses its gradient: the clip bounds only the weight. Equals verl 0.9.1's
    ``compute_policy_loss_cispo``. Defaults: ε_low = 1 (no lower bound, as the paper runs it) and
    ε_high = 0.28; ``clip_frac`` is the share of tokens whose weight was clipped.
    """

    name = "cispo"
    description = "CISPO: policy gradient weighted by a clipped, detached importance ratio"
    source = "MiniMax 2025 (MiniMax-M1, arXiv 2506.13585); verl compute_policy_loss_cispo"

    clip_mode = "weight"  # the clip bounds the detached weight; every token keeps its gradient

    clip_ratio_low: float | None = hyperparameter(1.0, "lower clip range ε_low of the weight (1: no lower bound)")
    clip_ratio_high: float | None = hyperparameter(0.28, "upper clip range ε_high of the weight")

    def validate(self) -> None:
        super().validate()
        self.validate_clip_range()

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        ratio, _ = ratio_and_log_ratio(log_probs, old_log_probs)
        weight = torch.clamp(ratio, 1.0 - self.low, 1.0 + self.high)
        return -weight.detach() * advantages * log_probs, {"clipped": ratio != weight}
