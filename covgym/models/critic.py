"""The PPO critic: a value head on its own copy of a causal LM's transformer trunk.

Why its own copy rather than a second head on the policy's trunk: the critic then has its own optimizer
settings (verl trains it at 10× the policy's learning rate), its regression gradients never move the policy's
weights, so the policy's entropy (what covgym studies) changes only through the policy loss, and the two can be
checkpointed, frozen or warmed up independently. The cost is a second copy of the trunk's weights, which is
acceptable at the model sizes covgym trains; verl and OpenRLHF make the same choice.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn


class Critic(nn.Module):
    """``V(s_t)`` for every position of a batch of token sequences.

    Args:
        trunk: a ``transformers`` base model (no LM head) returning ``last_hidden_state``; it is used as given
            (``from_pretrained`` makes the copy).
    """

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        hidden_size = getattr(trunk.config, "hidden_size", None)
        if hidden_size is None:
            raise ValueError("trunk.config has no hidden_size; pass a transformers base model")
        self.trunk = trunk
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=getattr(trunk.config, "initializer_range", 0.02))
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_pretrained(cls, model: str | Path | nn.Module, **kwargs) -> Critic:
        """A critic from a model directory / hub id (loaded with ``AutoModel``) or from a loaded model.

        A loaded causal LM (e.g. the policy's ``PreTrainedModel``) is deep-copied and its LM head dropped, so the
        critic never shares weights with it. ``kwargs`` go to ``AutoModel.from_pretrained``.
        """
        if isinstance(model, nn.Module):
            base = getattr(model, "base_model", model)
            trunk = copy.deepcopy(base)
        else:
            from transformers import AutoModel

            trunk = AutoModel.from_pretrained(str(model), **kwargs)
        trunk.requires_grad_(True)
        critic = cls(trunk)
        return critic.to(next(trunk.parameters()).device)

    def values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, T]`` float32 values aligned with the batch: position ``t`` holds ``V`` of the state before token
        ``t`` (the value head applied to the hidden state at ``t − 1``); position 0 holds 0.
        """
        attention_mask = attention_mask.to(input_ids.device)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # [B, T], correct under left padding
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state  # [B, T, H]
        head_dtype = self.value_head.weight.dtype
        per_position = self.value_head(hidden.to(head_dtype)).squeeze(-1).float()  # [B, T]: V after token t
        return torch.cat([per_position.new_zeros(per_position.shape[0], 1), per_position[:, :-1]], dim=1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.values(input_ids, attention_mask)
