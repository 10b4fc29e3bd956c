"""Log-prob of a token and entropy of ``softmax(h·Wᵀ / T)``, fused with the output head for training.

For a vocabulary of 49k-152k entries the ``[positions, vocab]`` logits are the largest tensors of a policy
update, and autograd through ``head → logsumexp → softmax → product`` keeps several of them and makes a pass
over each for every operation. Here the forward keeps only ``h``, the tokens, ``log Z`` and ``H`` per position;
the backward recomputes the logits once and forms their gradient in place:

    ∂ log π(y) / ∂z_j = 1[j = y] − π_j,        ∂H / ∂z_j = −π_j (log π_j + H),

with ``z = h·Wᵀ / T`` (chain rule: ``∂/∂(h·Wᵀ) = ∂/∂z / T``), so that at most two ``[positions, vocab]`` float32
buffers exist at a time. tests/test_head_stats.py checks values and gradients against plain autograd.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _logits(hidden: Tensor, weight: Tensor, temperature: float) -> Tensor:
    """Float32 ``[C, V]`` logits ``h·Wᵀ / T`` (the head's own dtype for the matmul, never autocast)."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = (hidden.to(weight.dtype) @ weight.t()).float()
    return logits if temperature == 1.0 else logits.div_(temperature)


class _HeadTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, tokens: Tensor, temperature: float
                ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # an output the loss does not use sends None: its terms are skipped
        log_probs = _logits(hidden, weight, temperature)  # [C, V], turned into log π in place
        log_z = torch.logsumexp(log_probs, dim=-1)  # [C]
        log_probs.sub_(log_z[:, None])
        token_log_prob = log_probs.gather(-1, tokens[:, None])[:, 0]
        entropy = -(log_probs.exp().unsqueeze(-2) @ log_probs.unsqueeze(-1))[:, 0, 0]  # −Σ π log π, a batched dot
        ctx.save_for_backward(hidden, weight, tokens, log_z, entropy)
        ctx.temperature = temperature
        return token_log_prob, entropy

    @staticmethod
    def backward(ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None
                 ) -> tuple[Tensor | None, Tensor | None, None, None]:
        hidden, weight, tokens, log_z, entropy = ctx.saved_tensors
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None
        log_probs = _logits(hidden, weight, ctx.temperature).sub_(log_z[:, None])  # [C, V] log π
        probs = log_probs.exp()  # [C, V] π
        if grad_entropy is not None:  # −π ⊙ (g_lp + g_H (log π + H)); the one-hot part of ∂ log π(y) below
            grad = log_probs.add_(entropy[:, None]).mul_(grad_entropy[:, None])
            if grad_log_prob is not None:
                grad.add_(grad_log_prob[:, None])
            grad.mul_(probs).neg_()
            del probs
        else:
            del log_probs
            grad = probs.mul_(grad_log_prob[:, None]).neg_()
        if grad_log_prob is not None:
            grad[torch.arange(tokens.shape[0], device=tokens.device), tokens] += grad_log_prob
        if ctx.temperature != 1.0:
            grad.div_(ctx.temperature)
        grad = grad.to(weight.dtype)  # [C, V]: the gradient of h·Wᵀ
        grad_hidden = (grad @ weight).to(hidden.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ hidden.to(weight.dtype) if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_weight, None, None


def head_token_stats(hidden: Tensor, weight: Tensor, tokens: Tensor, temperature: float = 1.0
                     ) -> tuple[Tensor, Tensor]:
    """``(log π(tokens), H)`` ``[C]`` each, float32, for hidden states ``[C, H]`` and head weight ``[V, H]``."""
    return _HeadTokenStats.apply(hidden, weight, tokens, float(temperature))
