"""KL-Cov (Cui et al., 2025): a KL penalty on the tokens whose covariance term is highest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

from covgym.algorithms.base import hyperparameter, register
from covgym.algorithms.functional import kl_cov_token_loss
from covgym.algorithms.grpo import GRPO


@register
@dataclass
class KLCov(GRPO):
    """GRPO advantages; unclipped ``−A·ratio``, plus ``ppo_kl_coef·|log π − log π_old|`` on the top tokens.

    The ``max(1, int(k·N))`` response tokens with the largest ``cov = (A − mean A)·(log π − mean log π)`` are
    chosen over the whole optimizer mini-batch (across data-parallel ranks, not per micro-batch or per GPU as in
    verl). No PPO clipping (``clip_ratio*`` are ignored).

    Defaults: ``kl_cov_ratio = 2e-4`` (verl's default; the paper used 2e-3 for 7B and 2e-4 for 32B models) and
    ``ppo_kl_coef = 1.0`` (verl's function default and the paper's β = 1; verl's YAML says 0.1, which is not
    the paper's setting).

    The penalty ``|log π − log π_old|`` and its gradient are 0 while the policy still equals the rollout policy,
    so KL-Cov acts only on the second and later mini-batches of a rollout (``needs_off_policy_minibatches``):
    use several mini-batches per rollout (the paper: 8 optimizer steps per rollout). The trainer warns otherwise.
    """

    name = "kl_cov"
    description = "GRPO + KL-Cov: |log-ratio| penalty on the top-k covariance tokens"
    source = "Cui et al. 2025 (arXiv 2505.22617); verl compute_policy_loss_kl_cov"
    needs_off_policy_minibatches = True
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
