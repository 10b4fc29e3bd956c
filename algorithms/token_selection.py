"""Choosing tokens by their covariance term: the selection step shared by Clip-Cov and KL-Cov.

Each function works over the *global* optimizer mini-batch: in one process that is the tensor given; under data
parallelism (``torch.distributed`` initialised, several ranks) the means, counts and candidate sets are reduced or
gathered over ranks (see ``covgym.algorithms.distributed``) and each rank gets back the chosen tokens of its own
shard. The result is the same as running the selection on the concatenation of all shards in rank order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

from covgym.algorithms.distributed import all_reduce_sum, gather_variable


def global_token_count(response_mask: Tensor) -> int:
    """``Σ m`` over the global mini-batch."""
    return int(all_reduce_sum(response_mask.detach().to(torch.float64).sum()).item())


def covariance_terms(log_probs: Tensor, advantages: Tensor, response_mask: Tensor) -> Tensor:
    """``[B, T]`` per-token ``(A − mean A)·(log π − mean log π)``, detached, 0 outside the mask.

    Means are over the masked tokens of the global mini-batch. In one process this equals
    ``covgym.core.metrics.token_covariance``.
    """
    mask = response_mask.detach().to(log_probs.dtype)
    log_probs = log_probs.detach()
    advantages = advantages.detach().to(log_probs.dtype)
    sums = all_reduce_sum(torch.stack([(advantages * mask).sum(), (log_probs * mask).sum(), mask.sum()]))
    count = sums[2].clamp_min(1.0)
    return (advantages - sums[0] / count) * (log_probs - sums[1] / count) * mask


def selection_count(ratio: float, num_tokens: int) -> int:
    """``max(int(ratio · N), 1)``: how many tokens Clip-Cov/KL-Cov act on (verl's rule); 0 when ``ratio <= 0``.

    A ratio of 0 means "off", as in the paper's code, rather than verl's floor of one token.
    """
    return max(int(ratio * num_tokens), 1) if ratio > 0 else 0


def choose_random(eligible: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Pick ``min(count, #eligible)`` eligible tokens uniformly at random; ``[B, T]`` bool.

    The candidates are the eligible positions in row-major order (over ranks: rank 0's first); a permutation of
    them is drawn from ``generator`` (which must be in the same state on every rank) and its first ``count``
    entries are taken.
    """
    local = torch.nonzero(eligible.reshape(-1), as_tuple=True)[0]  # [E_local]
    sizes, rank = gather_variable(torch.tensor([local.numel()], device=eligible.device, dtype=torch.long))
    offset, total = int(sizes[:rank].sum().item()), int(sizes.sum().item())  # one entry per rank
    chosen = torch.zeros(eligible.numel(), dtype=torch.bool, device=eligible.device)
    if total > 0:
        order = torch.randperm(total, generator=generator, device=generator.device)[: min(count, total)]
        order = order.to(eligible.device)
        mine = order[(order >= offset) & (order < offset + local.numel())] - offset
        chosen[local[mine]] = True
    return chosen.reshape(eligible.shape)


def choose_top(scores: Tensor, response_mask: Tensor, count: int) -> Tensor:
    """The ``min(count, N)`` masked tokens with the largest ``scores``; ``[B, T]`` bool."""
    local = torch.nonzero(response_mask.reshape(-1) > 0, as_tuple=True)[0]  # [N_local]
    values, offset = gather_variable(scores.detach().reshape(-1)[local])
    chosen = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if values.numel() > 0:
        top = torch.topk(values, min(count, values.numel()), largest=True).indices
        mine = top[(top >= offset) & (top < offset + local.numel())] - offset
        chosen[local[mine]] = True
    return chosen.reshape(scores.shape)
