"""GAE with a learned critic (Schulman et al., 2016/2017): PPO's estimator, and the critic's value loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import explained_variance, gae_advantages_and_returns, value_loss
from covgym.algorithms.parts import Estimator
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class GAEEstimator(Estimator):
    """GAE(γ, λ) advantages from critic values, whitened over response tokens; returns = A + V.

    Needs a critic: the trainer builds a ``covgym.models.critic.Critic`` (learning rate ``critic_lr``), fills
    ``batch.values`` at rollout time and steps it on ``value_loss`` (clipped, ``cliprange_value``).
    """

    name = "gae"
    description = "GAE advantages from a learned critic (clipped value loss)"
    source = "Schulman et al. 2017; verl compute_gae_advantage_return / compute_value_loss"
    needs = frozenset({"critic"})
    uses_groups = False

    gamma: float = hyperparameter(1.0, "discount γ of GAE")
    lam: float = hyperparameter(1.0, "GAE λ")
    cliprange_value: float = hyperparameter(0.5, "value clip range: V is kept within V_old ± cliprange_value")
    critic_lr: float | None = hyperparameter(None, "critic learning rate (None: the policy's; verl uses 1e-5)")

    def validate(self) -> None:
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.cliprange_value < 0:
            raise ValueError(f"cliprange_value must be >= 0, got {self.cliprange_value}")
        if self.critic_lr is not None and self.critic_lr <= 0:
            raise ValueError(f"critic_lr must be > 0, got {self.critic_lr}")

    def compute_with_returns(self, batch: RolloutBatch) -> tuple[Tensor, Tensor]:
        if batch.values is None:
            raise ValueError("RolloutBatch.values is None; GAE needs critic values (covgym.models.critic.Critic.values)")
        return gae_advantages_and_returns(batch.outcome_token_rewards(), batch.values.to(batch.response_mask.dtype),
                                          batch.response_mask, self.gamma, self.lam)

    def compute(self, batch: RolloutBatch) -> Tensor:
        return self.compute_with_returns(batch)[0]

    def value_loss(self, values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor,
                   loss_agg_mode: str = "token-mean", loss_scale_factor: float | None = None,
                   global_token_count: float | None = None, global_seq_count: float | None = None
                   ) -> tuple[Tensor, dict[str, float]]:
        """Clipped value loss ``½·agg(max((V − R)², (clip(V, V_old ± c) − R)²))`` and its metrics.

        Returns ``(loss, {"value_loss", "value_clip_frac", "explained_variance"})``.
        """
        mask = response_mask.to(values.dtype)
        loss, maps = value_loss(values, old_values.to(values.dtype), returns.to(values.dtype), mask,
                                self.cliprange_value, loss_agg_mode, global_token_count, global_seq_count,
                                loss_scale_factor)
        denominator = mask.sum().clamp_min(1.0)
        return loss, {
            "value_loss": float(loss.detach()),
            "value_clip_frac": float((maps["clipped"].to(mask.dtype) * mask).sum() / denominator),
            "explained_variance": float(explained_variance(values.detach(), returns, mask)),
        }
