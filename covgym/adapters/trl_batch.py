"""Between TRL's GRPO tensors and covgym's ``RolloutBatch``: the one place that knows both layouts.

TRL keeps a generation batch as a left-padded prompt ``[B, P]`` and a right-padded completion ``[B, C]``, with
per-token values (log-probs, entropies, advantages) over the completion columns only. covgym's algorithms take a
``RolloutBatch`` whose per-token tensors are aligned with ``input_ids`` (``covgym.core.batch``). Laying the two side by
side, ``input_ids = [prompt | completion]`` with ``T = P + C``, is such a batch: the masks say where everything
is, so nothing in covgym depends on the prompt being left-padded. Completion column ``c`` is batch column
``P + c``. ``rollout_inputs_for_trl`` goes the other way (a covgym rollout as TRL's inputs), for tests that feed
the same rollout to both engines.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from covgym.core.batch import RolloutBatch


def rollout_batch_from_trl(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, loss_mask: Tensor,
                           log_probs: Tensor, entropies: Tensor, rewards: Tensor, group_size: int,
                           completion_mask: Tensor | None = None, ref_log_probs: Tensor | None = None,
                           info: Sequence[dict[str, Any]] | None = None) -> RolloutBatch:
    """A ``RolloutBatch`` ``[B, P + C]`` of TRL's tensors.

    Args:
        prompt_ids, prompt_mask: ``[B, P]`` (left-padded).
        completion_ids, loss_mask: ``[B, C]``; ``loss_mask`` is 1 on the tokens the policy generated and is trained
            on (TRL's ``completion_mask × tool_mask``).
        log_probs, entropies: ``[B, C]`` of the rollout policy; ``ref_log_probs`` likewise (or None).
        rewards: ``[B]``; rows ``g·G … g·G + G − 1`` answer one prompt (TRL's order), ``G = group_size``.
        completion_mask: ``[B, C]`` real completion tokens (default: ``loss_mask``).
    """
    b, p = prompt_ids.shape
    if b % group_size:
        raise ValueError(f"{b} completions are not whole groups of {group_size}")
    completion_mask = loss_mask if completion_mask is None else completion_mask
    zeros = torch.zeros(b, p, dtype=torch.float32, device=prompt_ids.device)
    mask = loss_mask.to(torch.float32)

    def widen(values: Tensor) -> Tensor:  # [B, C] -> [B, P + C], zero on the prompt and outside the mask
        return torch.cat([zeros, values.detach().to(torch.float32) * mask], dim=1)

    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, completion_ids], dim=1).long(),
        attention_mask=torch.cat([prompt_mask, completion_mask], dim=1).long(),
        response_mask=torch.cat([zeros, mask], dim=1),
        old_log_probs=widen(log_probs),
        rewards=rewards.detach().to(torch.float32),
        group_ids=torch.arange(b, device=prompt_ids.device) // group_size,
        entropies=widen(entropies),
        ref_log_probs=None if ref_log_probs is None else widen(ref_log_probs),
        info=list(info) if info is not None else [{} for _ in range(b)],
    )


def completion_columns(values: Tensor, prompt_width: int, completion_width: int | None = None) -> Tensor:
    """``[B, P + C]`` -> the completion's ``[B, C]`` (its first ``completion_width`` columns when given)."""
    out = values[:, prompt_width:]
    return out if completion_width is None else out[:, :completion_width]


def rollout_inputs_for_trl(batch: RolloutBatch, pad_token_id: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """A single-turn covgym rollout as TRL's inputs, and where each completion token sits in ``batch``.

    Returns:
        ``(inputs, rows, columns)``: ``inputs`` holds ``prompt_ids``/``prompt_mask`` (left-padded ``[B, P]``) and
        ``completion_ids``/``completion_mask`` (right-padded ``[B, C]``); completion position ``(i, c)`` is
        ``batch`` position ``(i, columns[i, c])`` where ``completion_mask`` is 1 (``rows`` is ``[B, C]`` too).
        ``to_completion_layout`` moves any ``[B, T]`` tensor of ``batch`` with them.
    """
    starts, ends = [], []
    for i in range(batch.batch_size):
        response = (batch.response_mask[i] > 0).nonzero().flatten()
        if response.numel() == 0:
            raise ValueError(f"row {i} has no response token")
        starts.append(int(response[0]))
        ends.append(int(batch.attention_mask[i].sum()))
    p, c = max(starts), max(e - s for s, e in zip(starts, ends))
    b = batch.batch_size
    prompt_ids = torch.full((b, p), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros(b, p, dtype=torch.long)
    completion_ids = torch.full((b, c), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros(b, c, dtype=torch.long)
    rows = torch.arange(b)[:, None].expand(b, c).clone()
    columns = torch.zeros(b, c, dtype=torch.long)
    for i, (start, end) in enumerate(zip(starts, ends)):
        prompt_ids[i, p - start:] = batch.input_ids[i, :start]
        prompt_mask[i, p - start:] = 1
        completion_ids[i, :end - start] = batch.input_ids[i, start:end]
        completion_mask[i, :end - start] = batch.response_mask[i, start:end].long()
        columns[i, :end - start] = torch.arange(start, end)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask}
    return inputs, rows, columns


def to_completion_layout(values: Tensor, rows: Tensor, columns: Tensor, completion_mask: Tensor) -> Tensor:
    """A ``[B, T]`` tensor of a covgym batch as ``[B, C]`` completion values (0 where ``completion_mask`` is 0)."""
    return values[rows, columns] * completion_mask.to(values.dtype)
