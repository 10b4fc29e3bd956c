"""GSPO (Zheng et al., 2025): PPO-clip on a sequence-level importance ratio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.parts import ClipRange, PolicyLoss
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class GSPOLoss(ClipRange, PolicyLoss):
    """Sequence ratio ``s_i = exp(mean_t(log π − log π_old))`` over the response, clipped PPO-style.

    Per token the ratio is ``s_i,t = sg[s_i]·π_t/sg[π_t]`` (value ``s_i``, gradient of ``log π_t`` scaled by
    ``s_i``), its log clamped at 10; ``L = max(−A·s, −A·clip(s, 1−ε_low, 1+ε_high))``. Equals verl 0.9.1's
    ``compute_policy_loss_gspo``. Defaults: the paper's ε_low = 3e-4, ε_high = 4e-4 and sequence-level
    aggregation (``seq-mean-token-mean``). On the first, on-policy mini-batch every ``s_i = 1`` lies inside the clip
    range, so the step is a plain sequence-level policy gradient (each token's ``∇log π_t`` weighted by its
    response's ``A``, averaged over the response); the clip starts to bind once the policy has moved off the rollout
    policy, which is why it asks for several mini-batches per rollout.
    """

    name = "gspo"
    description = "GSPO: PPO-clip on the sequence-level (length-normalised) importance ratio"
    source = "Zheng et al. 2025 (arXiv 2507.18071); verl compute_policy_loss_gspo"
    needs = frozenset({"off_policy_minibatches"})
    clip_mode = "sequence_ratio"  # the clip acts on each response's ratio, not on each token's

    loss_agg_mode: str = hyperparameter("seq-mean-token-mean", "loss aggregation (GSPO: seq-mean-token-mean)")
    clip_ratio_low: float | None = hyperparameter(3e-4, "lower clip range ε_low of the sequence ratio")
    clip_ratio_high: float | None = hyperparameter(4e-4, "upper clip range ε_high of the sequence ratio")

    def validate(self) -> None:
        super().validate()
        self.validate_clip_range()

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        log_ratio = log_probs - old_log_probs  # [B, T]
        lengths = response_mask.sum(-1).clamp(min=1)  # [B]
        sequence_log_ratio = (log_ratio * response_mask).sum(-1) / lengths  # [B]
        token_log_ratio = log_probs - log_probs.detach() + sequence_log_ratio.detach()[:, None]
        ratio = torch.exp(torch.clamp(token_log_ratio, max=10.0))  # [B, T]
        loss_unclipped = -advantages * ratio
        loss_clipped = -advantages * torch.clamp(ratio, 1.0 - self.low, 1.0 + self.high)
        return torch.maximum(loss_unclipped, loss_clipped), {"clipped": loss_clipped > loss_unclipped}
