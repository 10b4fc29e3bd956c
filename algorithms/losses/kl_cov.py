"""KL-Cov (Cui et al., 2025): a KL penalty on the tokens whose covariance term is highest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import kl_cov_token_loss
from covgym.algorithms.parts import PolicyLoss
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class KLCovLoss(PolicyLoss):
    """Unclipped ``−A·ratio``, plus ``ppo_kl_coef·|log π − log π_old|`` on the top-covariance tokens.

    The ``max(1, int(k·N))`` response tokens with the largest ``cov = (A − mean A)·(log π − mean log π)`` are
    chosen over the whole optimizer mini-batch (across data-parallel ranks). No PPO clipping. Defaults:
    ``kl_cov_ratio = 2e-4`` (verl's; the paper used 2e-3 for 7B) and ``ppo_kl_coef = 1.0`` (the paper's β).
    The penalty is 0 while the policy equals the rollout policy, so it acts only on later mini-batches of a
    rollout (``needs`` off-policy mini-batches).
    """

    name = "kl_cov"
    description = "KL-Cov: |log-ratio| penalty on the top-k covariance tokens"
    source = "Cui et al. 2025 (arXiv 2505.22617); verl compute_policy_loss_kl_cov"
    needs = frozenset({"off_policy_minibatches"})
    selected_metric = "kl_cov_penalized_frac"

    kl_cov_ratio: float = hyperparameter(2e-4, "fraction k of response tokens to penalise (max(1, int(k·N)))")
    ppo_kl_coef: float = hyperparameter(1.0, "β, coefficient of the |log-ratio| penalty on the chosen tokens")

    def validate(self) -> None:
        super().validate()
        if not 0 < self.kl_cov_ratio <= 1:
            raise ValueError(f"kl_cov_ratio must be in (0, 1], got {self.kl_cov_ratio}")
        if self.ppo_kl_coef < 0:
            raise ValueError(f"ppo_kl_coef must be >= 0, got {self.ppo_kl_coef}")

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        return kl_cov_token_loss(log_probs, old_log_probs, advantages, response_mask, self.kl_cov_ratio,
                                 self.ppo_kl_coef)
