"""Clip-Cov (Cui et al., 2025): cut the gradient of a few random tokens whose covariance term is high."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import clip_cov_token_loss
from covgym.algorithms.parts import ClipRange, PolicyLoss
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class ClipCovLoss(ClipRange, PolicyLoss):
    """PPO-clip without dual-clip, with ``clip_cov_ratio`` of the tokens detached.

    Per token ``cov = (A − mean A)·(log π − mean log π)`` over the global mini-batch's response tokens. Among the
    tokens not already clipped by PPO with ``clip_cov_lb < cov < clip_cov_ub``, ``int(r·N)`` (at least one when
    r > 0, at most all of them) are drawn uniformly and their loss is multiplied by 0. The draw uses the generator
    given by ``set_generator`` (the trainer seeds it per step), else one seeded with ``clip_cov_seed``.

    verl's defaults (r = 2e-4, bounds (1, 5), ε = 0.2). The paper's own scripts also set
    ``clip_ratio_low = clip_ratio_high = 1``. The detached fraction is reported as ``clip_cov_detached_frac``.
    """

    name = "clip_cov"
    description = "Clip-Cov: detach a random r-fraction of high-covariance tokens"
    source = "Cui et al. 2025 (arXiv 2505.22617); verl compute_policy_loss_clip_cov"
    selected_metric = "clip_cov_detached_frac"

    clip_cov_ratio: float = hyperparameter(2e-4, "fraction r of response tokens to detach (max(int(r·N), 1))")
    clip_cov_lb: float = hyperparameter(1.0, "lower covariance bound of eligible tokens (exclusive)")
    clip_cov_ub: float = hyperparameter(5.0, "upper covariance bound of eligible tokens (exclusive)")
    clip_cov_seed: int = hyperparameter(0, "seed of the token-choice RNG when the trainer sets no generator")

    def validate(self) -> None:
        super().validate()
        self.validate_clip_range()
        if not 0 < self.clip_cov_ratio <= 1:
            raise ValueError(f"clip_cov_ratio must be in (0, 1], got {self.clip_cov_ratio}")
        if not self.clip_cov_lb < self.clip_cov_ub:
            raise ValueError(f"clip_cov_lb must be < clip_cov_ub, got {self.clip_cov_lb} and {self.clip_cov_ub}")

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(self.clip_cov_seed)
        return clip_cov_token_loss(log_probs, old_log_probs, advantages, response_mask, self.generator, self.low,
                                   self.high, self.clip_cov_ratio, self.clip_cov_lb, self.clip_cov_ub)
