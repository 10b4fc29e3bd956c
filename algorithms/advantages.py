"""Advantage estimators as plain functions over tensors (verl ``core_algos.py`` semantics).

Group estimators take one scalar score per sequence ``[B]`` and the group ids ``[B]`` (responses to the same
prompt share an id) and return one advantage per sequence ``[B]``; broadcast it over the response tokens with
``broadcast_over_response``. GAE works per token. Formulas: ``docs/algorithms.md``,
"Reference formulas".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

from covgym.algorithms.distributed import all_reduce_sum


def _group_index(group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``(inverse [B], sizes [G])``: each sequence's group slot and each group's size."""
    _, inverse, sizes = torch.unique(group_ids, return_inverse=True, return_counts=True)
    return inverse, sizes


def _group_sum(values: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    return torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)


def batch_whiten(values: Tensor, response_mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x − mean)/sqrt(var + eps)`` with the masked mean and unbiased variance of the *global* batch.

    Equals ``covgym.core.metrics.masked_whiten`` (verl's) in one process; under data parallelism the sums are reduced
    over ranks, so the result does not depend on how the batch is sharded.
    """
    mask = response_mask.to(values.dtype)
    first = all_reduce_sum(torch.stack([(values * mask).sum(), mask.sum()]))
    count = first[1]
    mean = first[0] / count.clamp_min(1.0)
    variance = all_reduce_sum(((values - mean) * mask).square().sum()) / count.clamp_min(1.0)
    if count > 1:
        variance = variance * count / (count - 1)
    return (values - mean) * torch.rsqrt(variance + eps)


def _check(scores: Tensor, group_ids: Tensor) -> None:
    if scores.dim() != 1 or group_ids.shape != scores.shape:
        raise ValueError(f"scores and group_ids must be 1-d of equal length, got {tuple(scores.shape)} and "
                         f"{tuple(group_ids.shape)}")


def group_mean(scores: Tensor, group_ids: Tensor) -> Tensor:
    """``[B]`` the mean score of each sequence's group; 0 for a group of one (verl's convention)."""
    _check(scores, group_ids)
    inverse, sizes = _group_index(group_ids)
    scores = scores.double()
    means = _group_sum(scores, inverse, sizes.numel()) / sizes
    return torch.where(sizes > 1, means, torch.zeros_like(means))[inverse]


def group_normalized_advantages(scores: Tensor, group_ids: Tensor, norm_by_std: bool = True,
                                epsilon: float = 1e-6) -> Tensor:
    """GRPO: ``(score − mean_g) / (std_g + ε)`` per group, std unbiased (Bessel); ``[B]`` float32.

    A group of one uses mean 0 and std 1. ``norm_by_std=False`` (Dr. GRPO) drops the division.
    """
    _check(scores, group_ids)
    inverse, sizes = _group_index(group_ids)
    scores = scores.double()
    centered = scores - group_mean(scores, group_ids)
    variance = _group_sum(centered.square(), inverse, sizes.numel()) / (sizes - 1).clamp_min(1)
    std = torch.where(sizes > 1, variance.sqrt(), torch.ones_like(variance))[inverse]
    advantages = centered / (std + epsilon) if norm_by_std else centered
    return advantages.float()


def rloo_advantages(scores: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO: ``score_i − mean of the other responses of its group`` = ``n/(n−1)·(score_i − mean_g)``; ``[B]``.

    A group of one keeps its raw score (verl's rloo: no baseline is available).
    """
    _check(scores, group_ids)
    inverse, sizes = _group_index(group_ids)
    n = sizes[inverse].double()  # [B]
    scores = scores.double()
    leave_one_out = (scores - group_mean(scores, group_ids)) * n / (n - 1).clamp_min(1)
    return torch.where(n > 1, leave_one_out, scores).float()


def broadcast_over_response(per_sequence: Tensor, response_mask: Tensor) -> Tensor:
    """``[B]`` → ``[B, T]``: the sequence's value on each of its response tokens, 0 elsewhere."""
    return per_sequence[:, None].to(response_mask.dtype) * response_mask


def reinforce_pp_baseline_advantages(scores: Tensor, group_ids: Tensor, response_mask: Tensor) -> Tensor:
    """REINFORCE++ with a group baseline: subtract the group mean, broadcast, whiten over the batch; ``[B, T]``.

    Whitening is over all masked tokens of the batch, across data-parallel ranks (a token-weighted mean and
    unbiased variance, as verl's ``masked_whiten``); the result is 0 outside the mask.
    """
    centered = (scores.double() - group_mean(scores, group_ids)).float()
    per_token = broadcast_over_response(centered, response_mask)
    return batch_whiten(per_token, response_mask) * response_mask


def gae_advantages_and_returns(token_rewards: Tensor, values: Tensor, response_mask: Tensor, gamma: float = 1.0,
                               lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over ``[B, T]`` tensors (verl ``compute_gae_advantage_return``).

    Walking backwards, ``δ_t = r_t + γ·V_next − V_t`` and ``A_t = δ_t + γλ·A_next``, where ``V_next``/``A_next``
    come from the next position with mask 1: positions with mask 0 (prompt, tool output, padding) are skipped,
    the running value and advantage carried through them. ``returns = A + V``; the advantages are then whitened
    over the masked positions (of all data-parallel ranks). Both outputs are 0 outside the mask.

    Args:
        token_rewards: ``[B, T]`` reward at each position (outcome reward on the last response token).
        values: ``[B, T]`` critic values, ``V_t`` = value of the state before token ``t``.
        response_mask: ``[B, T]``.
    """
    mask = response_mask.to(values.dtype)
    rewards = token_rewards.to(values.dtype)
    next_value = torch.zeros_like(values[:, 0])  # [B]
    running = torch.zeros_like(values[:, 0])  # [B]
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * running
        next_value = torch.where(mask[:, t] > 0, values[:, t], next_value)
        running = torch.where(mask[:, t] > 0, candidate, running)
        advantages[:, t] = running
    returns = (advantages + values) * mask
    return batch_whiten(advantages, mask) * mask, returns
