"""Data-parallel reductions the losses need, as no-ops in a single process.

Clip-Cov and KL-Cov choose tokens over the whole optimizer mini-batch. When ``torch.distributed`` is initialised
with several ranks, each rank holds one shard of that mini-batch, so the covariance means, the token count and the
set the choice is made from must be global. Every function here is a collective in that case: every rank must call
it, the same number of times, in the same order (the losses guarantee this by never returning early).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from covgym.core.lazy import torch
from covgym.core.lazy import torch_distributed as dist

if TYPE_CHECKING:
    from torch import Tensor


def world_size() -> int:
    """Number of data-parallel ranks (1 when ``torch.distributed`` is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum(values: Tensor) -> Tensor:
    """Element-wise sum of ``values`` over ranks (a copy; the input is left untouched)."""
    if world_size() == 1:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def gather_variable(values: Tensor) -> tuple[Tensor, int]:
    """Concatenate a 1-d tensor of any length from every rank, in rank order.

    Returns:
        ``(all_values, offset)``: the concatenation and where this rank's values start in it.
    """
    if world_size() == 1:
        return values, 0
    n = world_size()
    size = torch.tensor([values.numel()], device=values.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    offset = sum(counts[: dist.get_rank()])
    if longest == 0:
        return values.new_zeros(0), offset
    padded = values.new_zeros(longest)
    padded[: values.numel()] = values
    parts = [torch.zeros_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)]), offset
