"""PPO-clip (verl "vanilla"), with dual-clip and asymmetric clip-higher bounds (Schulman et al. 2017; DAPO)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import ppo_clip_token_loss
from covgym.algorithms.parts import ClipRange, PolicyLoss
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class PPOClipLoss(ClipRange, PolicyLoss):
    """``L = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high))``; where ``A < 0``, ``L = min(L, −A·c)`` (dual-clip).

    ``r = exp(clamp(log π − log π_old, −20, 20))``. Clip-higher (DAPO) is ``clip_ratio_high > clip_ratio_low``.
    """

    name = "ppo_clip"
    description = "PPO-clip surrogate with dual-clip (clip-higher via clip_ratio_high)"
    source = "Schulman et al. 2017; Yu et al. 2025 (DAPO); verl compute_policy_loss_vanilla"

    clip_ratio_c: float | None = hyperparameter(3.0, "dual-clip bound c > 1 for negative advantages (None: off)")

    def validate(self) -> None:
        super().validate()
        self.validate_clip_range()
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1.0 (or None to disable dual-clip), got {self.clip_ratio_c}")

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        return ppo_clip_token_loss(log_probs, old_log_probs, advantages, self.low, self.high, self.clip_ratio_c)
