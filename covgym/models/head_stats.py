"""Log-prob of a token and entropy of ``softmax(h·Wᵀ / T)``, fused with the output head for training.

For a vocabulary of 49k-152k entries the ``[positions, vocab]`` logits are the largest tensors of a policy
update, and autograd through ``head → logsumexp → softmax → product`` keeps several of them and makes a pass
over each for every operation. Here the forward keeps only ``h``, the tokens, ``log Z`` and ``H`` per position;
the backward recomputes the logits once and forms their gradient in place:

    ∂ log π(y) / ∂z_j = 1[j = y] − π_j,        ∂H / ∂z_j = −π_j (log π_j + H),

with ``z = h·Wᵀ / T`` (chain rule: ``∂/∂(h·Wᵀ) = ∂/∂z / T``). Positions are taken ``chunk_rows`` at a time inside
one autograd node, so that two ``[chunk_rows, vocab]`` float32 buffers, allocated once per call and reused by
every chunk, are all the vocabulary-sized memory there is (a fresh buffer of that size per chunk costs page
faults on every use), and the head's weight gradient is accumulated in one tensor instead of one per chunk.
tests/test_head_stats.py checks values and gradients against plain autograd through full logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _logits(hidden: Tensor, weight: Tensor, temperature: float, buffer: Tensor) -> Tensor:
    """Float32 ``[C, V]`` logits ``h·Wᵀ / T`` written into ``buffer[:C]`` (the head's own dtype for the matmul,
    never autocast)."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        if weight.dtype == torch.float32:
            logits = torch.mm(hidden.float(), weight.t(), out=buffer[:hidden.shape[0]])
        else:
            logits = buffer[:hidden.shape[0]].copy_(hidden.to(weight.dtype) @ weight.t())
    return logits if temperature == 1.0 else logits.div_(temperature)


def _buffers(rows: int, weight: Tensor) -> tuple[Tensor, Tensor]:
    """The two reusable float32 ``[rows, V]`` work buffers of one call."""
    shape = (rows, weight.shape[0])
    return (torch.empty(shape, dtype=torch.float32, device=weight.device),
            torch.empty(shape, dtype=torch.float32, device=weight.device))


class _HeadTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, tokens: Tensor, temperature: float, chunk_rows: int
                ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # an output the loss does not use sends None: its terms are skipped
        n = hidden.shape[0]
        token_log_prob, entropy, log_z = (torch.empty(n, dtype=torch.float32, device=hidden.device)
                                          for _ in range(3))
        shifted_buffer, exp_buffer = _buffers(min(chunk_rows, n), weight)
        for start in range(0, n, chunk_rows):
            rows = slice(start, start + chunk_rows)
            shifted = _logits(hidden[rows], weight, temperature, shifted_buffer)  # z, shifted to t = z − max z
            row_max = shifted.amax(dim=-1, keepdim=True)
            shifted.sub_(row_max)
            exp_shifted = torch.exp(shifted, out=exp_buffer[:shifted.shape[0]])  # e = exp t: the forward's one exp
            total = exp_shifted.sum(dim=-1)  # s = Σ e, so log Z = max z + log s
            log_total = total.log()
            token_log_prob[rows] = shifted.gather(-1, tokens[rows, None])[:, 0] - log_total
            # H = log Z − Σ π z = log s − Σ e t / s: a batched dot instead of a [C, V] product buffer
            entropy[rows] = log_total - (exp_shifted.unsqueeze(-2) @ shifted.unsqueeze(-1))[:, 0, 0] / total
            log_z[rows] = row_max[:, 0] + log_total
        ctx.save_for_backward(hidden, weight, tokens, log_z, entropy)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return token_log_prob, entropy

    @staticmethod
    def backward(ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None
                 ) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        hidden, weight, tokens, log_z, entropy = ctx.saved_tensors
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None, None
        # ∂/∂z_j = 1[j = y] g_lp + π_j (a + b z_j), with a = −g_lp − g_H (H − log Z) and b = −g_H;
        # the 1/T of z = h·Wᵀ/T folds into a, b and the one-hot term, so no pass divides the [C, V] gradient
        scale = 1.0 / ctx.temperature
        g_lp = torch.zeros_like(log_z) if grad_log_prob is None else grad_log_prob
        g_h = torch.zeros_like(log_z) if grad_entropy is None else grad_entropy
        offset = (-g_lp - g_h * (entropy - log_z)) * scale
        slope = -g_h * scale
        n, chunk_rows = hidden.shape[0], ctx.chunk_rows
        logits_buffer, grad_buffer = _buffers(min(chunk_rows, n), weight)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight: Tensor | None = None
        for start in range(0, n, chunk_rows):
            rows = slice(start, start + chunk_rows)
            h = hidden[rows]
            logits = _logits(h, weight, ctx.temperature, logits_buffer)  # [C, V] z, recomputed
            if grad_entropy is not None:  # (a + b z) ⊙ π, π formed in z's buffer
                grad = torch.addcmul(offset[rows, None], logits, slope[rows, None], out=grad_buffer[:h.shape[0]])
                grad.mul_(logits.sub_(log_z[rows, None]).exp_())
            else:
                grad = logits.sub_(log_z[rows, None]).exp_().mul_(offset[rows, None])
            if grad_log_prob is not None:
                grad[torch.arange(h.shape[0], device=h.device), tokens[rows]] += grad_log_prob[rows] * scale
            grad = grad.to(weight.dtype)  # [C, V]: the gradient of h·Wᵀ
            if grad_hidden is not None:
                grad_hidden[rows] = grad @ weight
            if ctx.needs_input_grad[1]:
                h = h.to(weight.dtype)
                grad_weight = grad.t() @ h if grad_weight is None else grad_weight.addmm_(grad.t(), h)
        return grad_hidden, grad_weight, None, None, None


def head_token_stats(hidden: Tensor, weight: Tensor, tokens: Tensor, temperature: float = 1.0,
                     chunk_rows: int | None = None) -> tuple[Tensor, Tensor]:
    """``(log π(tokens), H)`` ``[N]`` each, float32, for hidden states ``[N, H]`` and head weight ``[V, H]``;
    ``chunk_rows`` positions at a time (default: all at once)."""
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32) + 0.0 * hidden.sum()  # keeps a (zero) graph under grad
        return empty, empty.clone()
    return _HeadTokenStats.apply(hidden, weight, tokens, float(temperature), int(chunk_rows or hidden.shape[0]))
