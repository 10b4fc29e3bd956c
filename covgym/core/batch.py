"""The rollout batch: the one data structure that flows from rollout to algorithm.

Layout convention (relied on everywhere): every per-token tensor is ``[B, T]`` and aligned with ``input_ids``,
i.e. position ``t`` holds a quantity *about token* ``input_ids[:, t]`` (its log-probability given the tokens
before it, the entropy of the distribution it was sampled from, its advantage, ...). Position 0 is never a
response token. covgym's rollout stores sequences right-padded, ``[prompt | response and tool tokens | padding]``,
but nothing depends on that: the masks say where everything is, and positions come from ``attention_mask``;
``attention_mask`` marks real tokens and ``response_mask`` the tokens the policy generated and is trained on
(0 on prompt, padding and environment/tool output).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class RolloutBatch:
    """A batch of sampled sequences with everything an algorithm needs.

    Attributes:
        input_ids: ``[B, T]`` long, token ids.
        attention_mask: ``[B, T]`` long, 1 on real tokens.
        response_mask: ``[B, T]`` float, 1 on the policy's own trainable tokens.
        old_log_probs: ``[B, T]`` float, log-prob of each token under the rollout policy (0 where mask is 0).
        rewards: ``[B]`` float, one scalar outcome reward per sequence.
        group_ids: ``[B]`` long, sequences answering the same prompt share a group id.
        entropies: ``[B, T]`` float, entropy of the rollout distribution at each token.
        ref_log_probs: ``[B, T]`` float or None, log-probs under the frozen reference policy.
        values: ``[B, T]`` float or None, critic values (PPO).
        token_rewards: ``[B, T]`` float or None, per-token rewards; when None the outcome reward is placed on
            each sequence's last response token.
        prompt_lengths: ``[B]`` long or None, the prompt tokens at the start of each (right-padded) row; lets
            scoring compute a prompt shared by several rows once.
        info: per-sequence python objects (env info dicts, texts); not tensors, never moved to a device.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    old_log_probs: Tensor
    rewards: Tensor
    group_ids: Tensor
    entropies: Tensor
    ref_log_probs: Tensor | None = None
    values: Tensor | None = None
    token_rewards: Tensor | None = None
    prompt_lengths: Tensor | None = None
    info: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        b, t = self.input_ids.shape
        for name in ("attention_mask", "response_mask", "old_log_probs", "entropies", "ref_log_probs", "values",
                     "token_rewards"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, t):
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(value.shape)}, expected {(b, t)}")
        for name in ("rewards", "group_ids", "prompt_lengths"):
            if getattr(self, name) is not None and tuple(getattr(self, name).shape) != (b,):
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(getattr(self, name).shape)}, expected {(b,)}")

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum().item())

    def outcome_token_rewards(self) -> Tensor:
        """``[B, T]`` per-token rewards: ``token_rewards`` if given, else the outcome on the last response token."""
        if self.token_rewards is not None:
            return self.token_rewards
        return place_on_last_token(self.rewards, self.response_mask)

    def select(self, index: Tensor | list[int]) -> "RolloutBatch":
        """Rows ``index`` of every tensor (and of ``info``): used to cut mini-batches and shards."""
        index = torch.as_tensor(index, dtype=torch.long)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                kwargs[f.name] = value[index.to(value.device)]
            elif f.name == "info":
                kwargs[f.name] = [value[i] for i in index.tolist()] if value else []
            else:
                kwargs[f.name] = value
        return RolloutBatch(**kwargs)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), torch.Tensor)})

    def replace(self, **changes: Any) -> "RolloutBatch":
        return dataclasses.replace(self, **changes)


def place_on_last_token(rewards: Tensor, response_mask: Tensor) -> Tensor:
    """Put each sequence's scalar reward ``[B]`` on its last response token: ``[B, T]``."""
    b, t = response_mask.shape
    positions = torch.arange(t, device=response_mask.device).expand(b, t)
    last = torch.where(response_mask > 0, positions, torch.full_like(positions, -1)).max(dim=1).values  # [B]
    out = torch.zeros(b, t, dtype=rewards.dtype, device=rewards.device)
    has_tokens = last >= 0
    out[has_tokens, last[has_tokens]] = rewards[has_tokens]
    return out
