"""Compute each distinct prompt once and share its KV cache across the rows that repeat it.

GRPO-style training samples ``group_size`` responses per prompt, so every prompt appears ``group_size`` times in
a batch, and for short answers prompts are most of the tokens. Running the transformer once per *distinct*
prompt and gathering its KV cache for every row that starts with it gives the same hidden states for the
responses (up to float rounding) at a fraction of the cost, in sampling, in scoring and in the training
forward/backward pass (gradients flow back through the gathered cache into the one prompt pass).

The helpers here are model-agnostic: they take a callable running the transformer trunk.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

# trunk(input_ids, attention_mask, position_ids, past_key_values) -> (hidden [B, T, H], cache)
TrunkFn = Callable[[Tensor, Tensor, Tensor, Any], tuple[Tensor, Any]]


_ATTENTION_LAYER_TYPES = {"full_attention", "sliding_attention", "chunked_attention"}


def supports_sharing(model: torch.nn.Module) -> bool:
    """Gathering a cache by rows needs attention layers only: recurrent / linear-attention states (Qwen3-Next,
    Jamba, ...) are not gathered by ``batch_select_indices``."""
    if getattr(model, "_is_stateful", False):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return set(getattr(config, "layer_types", None) or ["full_attention"]) <= _ATTENTION_LAYER_TYPES


def cache_keyword(module: torch.nn.Module) -> str:
    """The forward keyword for a KV cache: ``cache`` in recent ``transformers``, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a model output carries, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


@dataclass(frozen=True)
class PrefixGroups:
    """The distinct prefixes of a batch and, for every row, which one it starts with."""

    prefixes: list[tuple[int, ...]]
    index: Tensor  # [B] long, row -> position in ``prefixes``

    @property
    def saves_work(self) -> bool:
        return len(self.prefixes) < int(self.index.numel())


def group_prefixes(rows: Sequence[Sequence[int]]) -> PrefixGroups:
    """Deduplicate ``rows`` (in order of first appearance)."""
    positions: dict[tuple[int, ...], int] = {}
    index = [positions.setdefault(tuple(row), len(positions)) for row in rows]
    return PrefixGroups(list(positions), torch.tensor(index, dtype=torch.long))


def leading_prefix_lengths(rows: Sequence[Sequence[int]]) -> list[int]:
    """For every row, the length of the longest prefix it shares with another row (at most ``len(row) − 1``: the
    last token is always the row's own). Rows that repeat an earlier turn's context — a multi-turn episode's
    prompt followed by different attempts — share that prompt though their full contexts differ."""
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i]))
    lengths = [0] * len(rows)
    for left, right in zip(order, order[1:]):  # in sorted order a row's longest common prefix is with a neighbour
        a, b = rows[left], rows[right]
        common = 0
        for x, y in zip(a, b):
            if x != y:
                break
            common += 1
        lengths[left] = max(lengths[left], common)
        lengths[right] = max(lengths[right], common)
    return [min(length, max(len(row) - 1, 0)) for length, row in zip(lengths, rows)]


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor]:
    """``(ids, mask)`` ``[N, W]`` with every row aligned to the right edge, so all rows end at column ``W-1``."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids that count only real tokens (left padding does not shift them)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def prefill(trunk: TrunkFn, prefixes: Sequence[Sequence[int]], index: Tensor, pad_token_id: int, device: torch.device
            ) -> tuple[Tensor, Tensor, Tensor, Any]:
    """Run the distinct prefixes once and gather their cache for every row.

    Returns ``(ids, mask, last_hidden, cache)``: the left-padded prefixes and mask of every row ``[B, W]``, the
    hidden state at each row's last prefix token ``[B, H]`` and a cache of ``B`` rows.
    """
    ids, mask = left_pad(prefixes, pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    hidden, cache = trunk(ids, mask, positions_from_mask(mask), None)  # [P, W, H]
    index = index.to(device)
    cache.batch_select_indices(index)
    return ids[index], mask[index], hidden[index, -1], cache


def shared_prefix_hidden(trunk: TrunkFn, input_ids: Tensor, attention_mask: Tensor, prompt_lengths: Tensor,
                         groups: PrefixGroups, pad_token_id: int) -> Tensor:
    """Hidden states ``[B, T, H]`` of a right-padded batch, computing each distinct prompt only once.

    Row ``b`` is ``[prompt (prompt_lengths[b] tokens) | continuation | padding]``; ``groups`` holds its distinct
    prompts (``group_prefixes`` of the rows' prompt tokens). The result equals the trunk's
    output at the last prompt token and at every continuation token; it is zero at the other prompt positions,
    so it can only be used to predict continuation tokens.
    """
    b, t = input_ids.shape
    lengths = attention_mask.long().sum(-1).tolist()  # right padding: real tokens come first
    prompt = [int(p) for p in prompt_lengths.tolist()]
    prefix_ids, prefix_mask, last_hidden, cache = prefill(trunk, groups.prefixes, groups.index, pad_token_id,
                                                          input_ids.device)
    widths = [lengths[row] - prompt[row] for row in range(b)]
    width = max(max(widths), 1)
    offsets = torch.arange(width, device=input_ids.device)  # [L]
    starts = prompt_lengths.to(input_ids.device).long()[:, None]  # [B, 1]
    columns = (starts + offsets).clamp_max(t - 1)  # [B, L]
    continuation_mask = (offsets[None, :] < torch.tensor(widths, device=input_ids.device)[:, None]).long()  # [B, L]
    continuation = torch.where(continuation_mask > 0, input_ids.gather(1, columns),
                               torch.full_like(columns, pad_token_id))  # [B, L]
    hidden_c, _ = trunk(continuation, torch.cat([prefix_mask, continuation_mask], dim=1), starts + offsets, cache)
    rows = torch.arange(b, device=input_ids.device)
    keep = continuation_mask > 0
    hidden = torch.zeros(b, t, last_hidden.shape[-1], dtype=hidden_c.dtype, device=input_ids.device)
    hidden = hidden.index_put((rows, starts[:, 0] - 1), last_hidden.to(hidden_c.dtype))
    return hidden.index_put((rows[:, None].expand(b, width)[keep], columns[keep]), hidden_c[keep])


def shared_positions(groups: PrefixGroups, attention_mask: Tensor, prompt_lengths: Tensor) -> int:
    """Positions ``shared_prefix_hidden`` computes: the distinct prompts, padded to the longest, then every row's
    continuation, padded to the longest (what to weigh against another layout's positions)."""
    continuation = int((attention_mask.long().sum(-1) - prompt_lengths.to(attention_mask.device).long()).max())
    return len(groups.prefixes) * max(len(p) for p in groups.prefixes) + attention_mask.shape[0] * max(continuation, 1)
