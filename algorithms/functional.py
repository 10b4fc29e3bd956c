"""Policy-loss building blocks as plain functions over tensors (usable by any trainer).

All per-token tensors are ``[B, T]``; ``response_mask`` is 1 on trainable tokens. Formulas follow
``shared/design/algorithms.md`` (verl ``core_algos.py`` v0.9.x).
"""

from __future__ import annotations

import torch
from torch import Tensor

from covgym.metrics import masked_mean

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate_loss(token_loss: Tensor, response_mask: Tensor, loss_agg_mode: str = "token-mean",
                   global_token_count: float | None = None, global_seq_count: float | None = None,
                   norm_constant: float | None = None) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    Args:
        loss_agg_mode: one of ``LOSS_AGG_MODES``.
        global_token_count / global_seq_count: normalisers over the whole (data-parallel, all-ranks) mini-batch;
            default to this batch's own counts. With them the summed gradient over shards equals the gradient of
            the unsharded batch.
        norm_constant: divisor of ``seq-mean-token-sum-norm`` (default: ``T``, the padded length).
    """
    mask = response_mask.to(token_loss.dtype)
    if loss_agg_mode == "token-mean":
        count = mask.sum() if global_token_count is None else torch.as_tensor(global_token_count, dtype=mask.dtype)
        return (token_loss * mask).sum() / count.clamp_min(1.0)
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}")
    has_tokens = (mask.sum(-1) > 0).to(mask.dtype)  # [B]
    seq_count = has_tokens.sum() if global_seq_count is None else torch.as_tensor(global_seq_count, dtype=mask.dtype)
    seq_sum = (token_loss * mask).sum(-1)  # [B]
    if loss_agg_mode == "seq-mean-token-mean":
        per_seq = seq_sum / mask.sum(-1).clamp_min(1.0)
        return (per_seq * has_tokens).sum() / seq_count.clamp_min(1.0)
    total = (seq_sum * has_tokens).sum() / seq_count.clamp_min(1.0)
    if loss_agg_mode == "seq-mean-token-sum-norm":
        total = total / (float(token_loss.shape[-1]) if norm_constant is None else norm_constant)
    return total


def ratio_and_log_ratio(log_probs: Tensor, old_log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """``(exp(clamp(logp − old_logp, −20, 20)), logp − old_logp)``; the clamp is verl's, for stability."""
    log_ratio = log_probs - old_log_probs
    return torch.exp(torch.clamp(log_ratio, -20.0, 20.0)), log_ratio


def ppo_clip_token_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                        clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.2,
                        clip_ratio_c: float | None = 3.0) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip per-token loss with optional dual-clip (verl "vanilla").

    ``L = max(−A·ratio, −A·clip(ratio, 1−ε_low, 1+ε_high))``; where ``A < 0`` and ``clip_ratio_c`` is set,
    ``L = min(L, −A·clip_ratio_c)``. Returns ``([B, T] loss, tensors)`` where tensors holds the boolean maps
    ``clipped`` (L2 > L1) and ``dual_clipped`` for the metrics and for Clip-Cov's eligibility rule.
    """
    ratio, _ = ratio_and_log_ratio(log_probs, old_log_probs)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    loss = torch.maximum(loss_unclipped, loss_clipped)
    clipped = loss_clipped > loss_unclipped
    dual_clipped = torch.zeros_like(clipped)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1.0 (dual-clip), got {clip_ratio_c}")
        dual_bound = -advantages * clip_ratio_c
        dual_clipped = (advantages < 0) & (loss > dual_bound)
        loss = torch.where(advantages < 0, torch.minimum(loss, dual_bound), loss)
    return loss, {"ratio": ratio, "clipped": clipped, "dual_clipped": dual_clipped}


def kl_penalty(log_probs: Tensor, ref_log_probs: Tensor, kl_type: str = "low_var_kl") -> Tensor:
    """Per-token KL estimate between the policy and a reference (verl ``kl_penalty``).

    ``k1``/``kl``: logp − ref; ``abs``: |logp − ref|; ``k2``/``mse``: ½(logp − ref)²;
    ``k3``/``low_var_kl``: exp(ref − logp) − (ref − logp) − 1, clamped; a ``+`` suffix uses the k2 gradient with
    the estimator's value (straight-through).
    """
    if kl_type.endswith("+"):
        value = kl_penalty(log_probs, ref_log_probs, kl_type[:-1])
        gradient_carrier = kl_penalty(log_probs, ref_log_probs, "k2")
        return value.detach() + gradient_carrier - gradient_carrier.detach()
    if kl_type in ("kl", "k1"):
        return log_probs - ref_log_probs
    if kl_type == "abs":
        return (log_probs - ref_log_probs).abs()
    if kl_type in ("mse", "k2"):
        return 0.5 * (log_probs - ref_log_probs).square()
    if kl_type in ("low_var_kl", "k3"):
        log_ratio = torch.clamp(ref_log_probs - log_probs, -20.0, 20.0)
        return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -10.0, 10.0)
    raise ValueError(f"unknown kl_loss_type {kl_type!r}; choose one of k1, abs, k2, k3 (low_var_kl), or with '+'")


def group_normalized_advantages(scores: Tensor, group_ids: Tensor, norm_by_std: bool = True,
                                epsilon: float = 1e-6) -> Tensor:
    """GRPO outcome advantages ``[B]``: ``(score − mean_g) / (std_g + ε)`` per group (unbiased std).

    A group of one uses mean 0 and std 1 (verl's convention).
    """
    advantages = torch.empty_like(scores, dtype=torch.float32)
    for group in torch.unique(group_ids):
        members = group_ids == group
        group_scores = scores[members].float()
        if group_scores.numel() == 1:
            mean, std = torch.zeros(()), torch.ones(())
        else:
            mean, std = group_scores.mean(), group_scores.std(unbiased=True)
        centered = group_scores - mean
        advantages[members] = centered / (std + epsilon) if norm_by_std else centered
    return advantages
