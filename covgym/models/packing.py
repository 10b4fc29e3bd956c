"""Run a right-padded batch through the transformer trunk without computing its padding.

A training mini-batch is padded to its longest row, so with responses of uneven length a good part of the forward and
backward work (and of the activations kept for the backward pass) is spent on padding: in the SmolLM2 speed workload
at 256 new tokens, mini-batches held 1,087–2,040 real tokens in 2,136 positions. Packing puts several rows side by
side in one row of the same width (first-fit decreasing), each with position ids that restart at 0, and passes no 2-D
attention mask: ``transformers`` then reads the sequence boundaries off the position ids and masks attention
block-diagonally (its "padding-free" format). Each token sees exactly the tokens it saw in the padded batch, at the
same positions, so the hidden states are the same up to float rounding.

Not every model honours that format (an architecture with absolute position embeddings and no mask built from
position ids would let packed rows attend to each other), so ``packing_is_exact`` checks a model once on a small
batch before covgym relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# trunk(input_ids [R, W], position_ids [R, W]) -> hidden [R, W, H], with no attention mask
PackedTrunk = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class PackedBatch:
    """Rows of a right-padded ``[B, T]`` batch laid out in ``R <= B`` packed rows of width ``W``."""

    input_ids: Tensor  # [R, W]
    position_ids: Tensor  # [R, W]: 0, 1, … within every packed sequence (and within the free tail)
    row: Tensor  # [B] long: the packed row holding original row b
    offset: Tensor  # [B] long: the column where original row b starts in it

    @property
    def positions(self) -> int:
        return int(self.input_ids.numel())

    def locate(self, rows: Tensor, columns: Tensor) -> tuple[Tensor, Tensor]:
        """Packed ``(row, column)`` of the original positions ``(rows, columns)``."""
        return self.row[rows], self.offset[rows] + columns


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) of total length at most ``capacity``, longest items placed first."""
    bins: list[list[int]] = []
    free: list[int] = []
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        target = next((b for b, room in enumerate(free) if room >= lengths[item]), None)
        if target is None:
            bins.append([])
            free.append(capacity)
            target = len(bins) - 1
        bins[target].append(item)
        free[target] -= lengths[item]
    return bins


def pack(input_ids: Tensor, attention_mask: Tensor, pad_token_id: int) -> PackedBatch | None:
    """The packed layout of a right-padded batch, or None when packing saves no position or the batch has a
    padding hole (a mask that is not ones then zeros in every row)."""
    lengths_t = attention_mask.long().sum(-1)  # [B]
    b, t = input_ids.shape
    prefix = torch.arange(t, device=attention_mask.device)[None, :] < lengths_t[:, None]
    if b < 2 or not torch.equal(prefix, attention_mask > 0):
        return None
    lengths = lengths_t.tolist()
    width = max(max(lengths), 1)
    bins = first_fit_decreasing(lengths, width)
    if len(bins) * width >= b * t:
        return None
    ids = torch.full((len(bins), width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    positions = torch.zeros((len(bins), width), dtype=torch.long, device=input_ids.device)
    row, offset = [0] * b, [0] * b
    for packed_row, members in enumerate(bins):
        column = 0
        for member in members:
            n = lengths[member]
            ids[packed_row, column:column + n] = input_ids[member, :n]
            positions[packed_row, column:column + n] = torch.arange(n, device=input_ids.device)
            row[member], offset[member] = packed_row, column
            column += n
        positions[packed_row, column:] = torch.arange(width - column, device=input_ids.device)  # its own sequence
    as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=input_ids.device)  # noqa: E731
    return PackedBatch(ids, positions, as_tensor(row), as_tensor(offset))


@torch.no_grad()
def packing_is_exact(trunk: PackedTrunk, padded_trunk: Callable[[Tensor, Tensor], Tensor], vocab_size: int,
                     device: torch.device, pad_token_id: int, tolerance: float = 1e-3) -> bool:
    """Whether a model's trunk gives packed rows the hidden states it gives them padded (checked on 3 short rows).

    ``padded_trunk(input_ids, attention_mask)`` is the ordinary padded forward. The largest difference must stay
    within ``tolerance`` times the largest hidden value (rounding; a leak across rows is of the values' own size).
    Any error counts as "no".
    """
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 3, 2]
    ids = torch.full((3, 5), pad_token_id, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(min(4, vocab_size - 1), vocab_size, (n,), generator=generator)
    mask = (torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids, mask = ids.to(device), mask.to(device)
    layout = pack(ids, mask, pad_token_id)
    if layout is None:
        return False
    try:
        padded = padded_trunk(ids, mask).float()
        packed = trunk(layout.input_ids, layout.position_ids).float()
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    rows, columns = mask.nonzero(as_tuple=True)
    expected, got = padded[rows, columns], packed[layout.locate(rows, columns)]
    return bool((got - expected).abs().max() <= tolerance * expected.abs().max().clamp_min(1e-6))
