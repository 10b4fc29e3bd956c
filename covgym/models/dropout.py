"""Dropout off for every policy: RL compares two scorings of the same tokens, and they must be one function.

The rollout scores log π_old with the model in eval mode; the update scores log π with the model in train mode
(HF gradient checkpointing runs only when ``module.training``). With dropout active in train mode the first,
supposedly on-policy mini-batch then has log π ≠ log π_old, so PPO's clipping, approx KL and KL-Cov's
|log π − log π_old| act on dropout noise. verl avoids this by configuring dropout off; covgym does the same on
the loaded modules, and leaves the train/eval modes alone.
"""

from __future__ import annotations

from torch import nn

_DROPOUT_NAMES = ("dropout", "pdrop")  # LlamaAttention.attention_dropout, GPT-2's resid_pdrop-style names


def disable_dropout(model: nn.Module) -> int:
    """Set every dropout probability in ``model`` to 0, in place; returns how many settings were non-zero.

    Covers ``nn.Dropout``-style modules (GPT-2's ``attn_dropout``/``resid_dropout``, ``drop``) and float
    attributes that attention modules read at forward time (Llama's and Qwen's ``attention_dropout``, handed to
    SDPA as ``dropout_p`` in train mode). The model's config is left as it was, so a saved model keeps the
    author's settings for other uses.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            changed += module.p != 0
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if isinstance(value, float) and any(part in name for part in _DROPOUT_NAMES):
                changed += value != 0
                setattr(module, name, 0.0)
    return int(changed)
