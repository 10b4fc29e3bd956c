"""PPO with a learned critic: GAE advantages, PPO-clip policy loss, clipped value loss (Schulman et al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

from covgym.batch import RolloutBatch
from covgym.algorithms.base import Algorithm, hyperparameter, register
from covgym.algorithms.functional import explained_variance, gae_advantages_and_returns, value_loss


@register
@dataclass
class PPO(Algorithm):
    """PPO: GAE(γ, λ) advantages from critic values, whitened over response tokens; PPO-clip with dual-clip.

    The trainer builds a ``covgym.critic.Critic`` (its own copy of the policy's trunk plus a value head), fills
    ``batch.values`` with ``critic.values(...)`` at rollout time, calls ``advantages_and_returns(batch)`` once per
    rollout, and for each mini-batch steps the critic on ``value_loss(critic.values(...), batch.values, returns,
    response_mask)`` with its own optimizer (learning rate ``critic_lr``).
    """

    name = "ppo"
    description = "PPO with a critic: GAE advantages, PPO-clip, clipped value loss"
    source = "Schulman et al. 2017; verl compute_gae_advantage_return / compute_value_loss"
    needs_critic = True

    gamma: float = hyperparameter(1.0, "discount γ of GAE")
    lam: float = hyperparameter(1.0, "GAE λ")
    cliprange_value: float = hyperparameter(0.5, "value clip range: V is kept within V_old ± cliprange_value")
    critic_lr: float | None = hyperparameter(None, "critic learning rate (None: the policy's; verl uses 1e-5)")

    def validate(self) -> None:
        super().validate()
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.cliprange_value < 0:
            raise ValueError(f"cliprange_value must be >= 0, got {self.cliprange_value}")
        if self.critic_lr is not None and self.critic_lr <= 0:
            raise ValueError(f"critic_lr must be > 0, got {self.critic_lr}")

    def advantages_and_returns(self, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        """``(advantages [B, T], returns [B, T])`` by GAE; both 0 outside the response mask."""
        if batch.values is None:
            raise ValueError("RolloutBatch.values is None; PPO needs critic values (covgym.critic.Critic.values)")
        return gae_advantages_and_returns(batch.outcome_token_rewards(), batch.values.to(batch.response_mask.dtype),
                                          batch.response_mask, self.gamma, self.lam)

    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        return self.advantages_and_returns(batch)[0]

    def value_loss(self, values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor,
                   global_token_count: float | None = None, global_seq_count: float | None = None
                   ) -> tuple[Tensor, dict[str, float]]:
        """Clipped value loss ``½·agg(max((V − R)², (clip(V, V_old ± c) − R)²))`` and its metrics.

        Args:
            values: ``[B, T]`` current critic predictions (with gradient).
            old_values: ``[B, T]`` the rollout-time predictions (``batch.values``).
            returns: ``[B, T]`` from ``advantages_and_returns``.
        Returns:
            ``(loss, {"value_loss", "value_clip_frac", "explained_variance"})``; explained variance is of the
            current predictions.
        """
        mask = response_mask.to(values.dtype)
        loss, maps = value_loss(values, old_values.to(values.dtype), returns.to(values.dtype), mask,
                                self.cliprange_value, self.loss_agg_mode, global_token_count, global_seq_count,
                                self.loss_scale_factor)
        denominator = mask.sum().clamp_min(1.0)
        return loss, {
            "value_loss": float(loss.detach()),
            "value_clip_frac": float((maps["clipped"].to(mask.dtype) * mask).sum() / denominator),
            "explained_variance": float(explained_variance(values.detach(), returns, mask)),
        }
