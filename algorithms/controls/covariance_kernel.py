"""Covariance-aware GRPO (arXiv 2605.11538): Gaussian-kernel weights that tame tokens of extreme covariance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.distributed import all_reduce_sum
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register
from covgym.algorithms.token_selection import covariance_terms
from covgym.core.lazy import torch
from covgym.core.metrics import masked_mean

if TYPE_CHECKING:
    from torch import Tensor


def kernel_weights(covariance: Tensor, response_mask: Tensor) -> Tensor:
    """``[B, T]`` ``exp(−(c − c̄)²/(2σ²))``, ``c̄`` and ``σ`` (population) over the masked tokens; 1 where σ = 0."""
    mask = response_mask.detach().to(torch.float64)
    c = covariance.detach().to(torch.float64) * mask
    sums = all_reduce_sum(torch.stack([c.sum(), mask.sum()]))
    count = sums[1].clamp_min(1.0)
    mean = sums[0] / count
    variance = all_reduce_sum(((c - mean) * mask).square().sum()) / count
    if float(variance) <= 0.0:
        return torch.ones_like(covariance)
    weights = torch.exp(-((c - mean) * mask).square() / (2.0 * variance))
    return torch.where(mask > 0, weights, torch.ones_like(weights)).to(covariance.dtype)


@register
@dataclass
class CovarianceKernel(Control):
    """Weight each token's loss by a Gaussian kernel of its covariance term; no hyperparameter.

    ``c_t = (A_t − mean A)·(log π_t − mean log π)`` (Clip-Cov's and KL-Cov's per-token term, current log-probs,
    detached, means over the optimizer mini-batch) drives the entropy change (Cui et al. 2025). The weight is
    ``w_t = exp(−(c_t − c̄)²/(2σ_c²))`` with ``c̄`` and ``σ_c`` the mean and (population) std of ``c`` over the
    mini-batch's response tokens: tokens near the typical covariance keep their update, extreme ones (either sign)
    are smoothly down-weighted, and the bandwidth adapts to the batch (the paper's "hyperparameter-free"). Weights
    are in (0, 1] and multiply the per-token loss, which for PPO-clip equals multiplying the advantage (a positive
    factor commutes with the clipped max). The paper's exact kernel (centre, bandwidth, where it is applied) was
    not available here (abstract only: "a hyperparameter-free, covariance-weighted optimization method that
    dynamically down-weights extreme token-level updates via a Gaussian kernel"); the centring at the batch mean
    and the std as bandwidth are covgym's formulation. ``entropy_effect`` is not declared: it damps extreme tokens
    of both signs (entropy-contracting and -expanding), so its effect on entropy has no fixed direction.
    Logged: ``covariance_kernel_weight_mean``, ``covariance_kernel_weight_min``.
    """

    name = "covariance_kernel"
    description = "Gaussian-kernel weights on tokens by their covariance term (covariance-aware GRPO)"
    source = "after Covariance-Aware GRPO (arXiv 2605.11538); covgym's formulation of the kernel"

    def token_weights(self, log_probs: Tensor, advantages: Tensor, response_mask: Tensor, entropy: Tensor | None
                      ) -> tuple[Tensor | None, dict[str, float]]:
        covariance = covariance_terms(log_probs, advantages, response_mask)  # [B, T], detached
        weights = kernel_weights(covariance, response_mask)  # [B, T]
        valid = response_mask > 0
        metrics = {"covariance_kernel_weight_mean": float(masked_mean(weights.detach(), response_mask)),
                   "covariance_kernel_weight_min": float(weights[valid].min()) if bool(valid.any()) else 1.0}
        return weights, metrics
