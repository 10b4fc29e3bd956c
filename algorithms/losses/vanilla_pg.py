"""The plain policy-gradient loss ``−A·log π`` (GPG's loss; no ratio, no clipping)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.parts import PolicyLoss
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class VanillaPGLoss(PolicyLoss):
    """``L = −A·log π``: its gradient equals the PPO surrogate's at ratio 1, on every mini-batch."""

    name = "vanilla_pg"
    description = "Plain policy gradient −A·log π (no ratio, no clipping)"
    source = "Williams 1992; Chu et al. 2025 (GPG); verl compute_policy_loss_gpg"

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        return -log_probs * advantages, {}
