"""The first-order entropy predictor the entropy controls steer by, from what a rollout batch already holds.

For a sampled token a with advantage A, the policy-gradient step on ``A·log π(a)`` moves the logits by
``Δz = η·A·(e_a − π)``, and to first order the entropy of that state changes by
``ΔH ≈ −η·A·[π_a·(log π_a + H) − Σ_b π_b²·(log π_b + H)]`` (docs/entropy.md, "entropy polarity").
The batch holds ``log π_a`` (``old_log_probs``) and ``H`` (``entropies``) of every token but not the whole
distribution, so the controls use the leading term ``−η·A·π_a·(log π_a + H)``: its sign is the polarity
shortcut "contracts iff A·(π_a − e^{−H}) > 0", which agrees with the exact sign on most tokens (the trainer logs
the agreement as ``polarity_threshold_agree_frac``; ≈ 0.95 on the tiny model). The dropped term
``Σ_b π_b²(log π_b + H) = Cov_π(π, log π) ≥ 0`` only shifts every token's bracket by the same state constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from covgym.algorithms.distributed import all_reduce_sum
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


def unit_step_entropy_change(batch: RolloutBatch, advantages: Tensor) -> Tensor:
    """``[B, T]`` leading-order ΔH per unit step of each token's update, ``−A·π_a·(log π_a + H)``; 0 off the mask."""
    valid = batch.response_mask > 0
    zero = torch.zeros((), dtype=advantages.dtype, device=advantages.device)
    log_pa = torch.where(valid, batch.old_log_probs.to(advantages.dtype), zero)  # whatever padding holds: no inf/nan
    entropy = torch.where(valid, batch.entropies.to(advantages.dtype), zero)
    return torch.where(valid, -advantages * log_pa.exp() * (log_pa + entropy), zero)


def rollout_entropy(batch: RolloutBatch) -> float:
    """Mean token entropy of the rollout over the response tokens of the global batch (all ranks)."""
    mask = batch.response_mask.double()
    entropies = torch.where(mask > 0, batch.entropies.double(), torch.zeros((), dtype=torch.float64))
    sums = all_reduce_sum(torch.stack([(entropies * mask).sum(), mask.sum()]))
    return float(sums[0] / sums[1].clamp_min(1.0))


def global_mean(values: Tensor, mask: Tensor) -> float:
    """``Σ values / Σ mask`` over the global batch."""
    sums = all_reduce_sum(torch.stack([values.double().sum(), mask.double().sum()]))
    return float(sums[0] / sums[1].clamp_min(1.0))


def linear_schedule(step: int, start: float, end: float | None, steps: int) -> float:
    """``start`` annealed linearly to ``end`` over ``steps`` steps (constant ``start`` when ``end`` is None)."""
    if end is None or steps <= 0:
        return start
    return start + (end - start) * min(1.0, step / steps)
