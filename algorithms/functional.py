"""Loss building blocks and advantage estimators as plain functions over tensors (usable by any trainer).

All per-token tensors are ``[B, T]``; ``response_mask`` is 1 on trainable tokens. Formulas follow
``docs/algorithms.md``, "Reference formulas" (verl 0.9.1 ``core_algos.py``). The per-token losses return
``(loss [B, T], maps)`` where ``maps`` holds boolean/float ``[B, T]`` tensors for the metrics (``clipped``,
``dual_clipped``, ``selected``, ``covariance``); reduce them with ``aggregate_loss``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

from covgym.algorithms.advantages import (batch_whiten, broadcast_over_response, gae_advantages_and_returns, group_mean,
                                          group_normalized_advantages, reinforce_pp_baseline_advantages,
                                          rloo_advantages)
from covgym.algorithms.token_selection import (choose_random, choose_top, covariance_terms, global_token_count,
                                               selection_count)
from covgym.core.metrics import masked_var

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate_loss(token_loss: Tensor, response_mask: Tensor, loss_agg_mode: str = "token-mean",
                   global_token_count: float | None = None, global_seq_count: float | None = None,
                   loss_scale_factor: float | None = None) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    Args:
        loss_agg_mode: one of ``LOSS_AGG_MODES``.
        global_token_count / global_seq_count: normalisers over the whole (data-parallel, all-ranks) mini-batch;
            default to this batch's own counts. With them the summed gradient over shards equals the gradient of
            the unsharded batch.
        loss_scale_factor: divisor of ``seq-mean-token-sum-norm`` (default: ``T``, the padded length; Dr. GRPO
            wants a constant such as the maximum response length, so that the loss does not depend on padding).
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
        total = total / (float(token_loss.shape[-1]) if loss_scale_factor is None else loss_scale_factor)
    return total


def ratio_and_log_ratio(log_probs: Tensor, old_log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """``(ratio, log_ratio)`` with ``log_ratio = clamp(logp − old_logp, −20, 20)`` and ``ratio = exp(log_ratio)``.

    verl clamps in its vanilla loss for stability; we clamp in every loss (Clip-Cov and KL-Cov too), which
    changes nothing unless the policy moved by more than e^20 on a token.
    """
    log_ratio = torch.clamp(log_probs - old_log_probs, -20.0, 20.0)
    return torch.exp(log_ratio), log_ratio


def ppo_clip_token_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor,
                        clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.2,
                        clip_ratio_c: float | None = 3.0) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip per-token loss with optional dual-clip (verl "vanilla").

    ``L = max(−A·ratio, −A·clip(ratio, 1−ε_low, 1+ε_high))``; where ``A < 0`` and ``clip_ratio_c`` is set,
    ``L = min(L, −A·clip_ratio_c)``. Maps: ``clipped`` (L2 > L1) and ``dual_clipped`` (the dual bound is active).
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
    return loss, {"clipped": clipped, "dual_clipped": dual_clipped}


def clip_cov_token_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                        generator: torch.Generator, clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.2,
                        clip_cov_ratio: float = 2e-4, clip_cov_lb: float = 1.0, clip_cov_ub: float = 5.0
                        ) -> tuple[Tensor, dict[str, Tensor]]:
    """Clip-Cov (Cui et al. 2025): PPO-clip (no dual-clip) with the gradient of a few high-covariance tokens cut.

    Eligible tokens: mask 1, not already clipped by PPO (L2 > L1), and ``lb < cov < ub`` with
    ``cov = (A − mean A)·(logp − mean logp)`` (means over the masked tokens of the global mini-batch).
    ``min(max(int(r·N), 1), #eligible)`` of them (none when r = 0), drawn uniformly with ``generator``, get
    loss × 0.
    Maps: ``clipped``, ``selected`` (the detached tokens), ``covariance``.
    """
    ratio, _ = ratio_and_log_ratio(log_probs, old_log_probs)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clipped = (loss_clipped > loss_unclipped) & (response_mask > 0)
    covariance = covariance_terms(log_probs, advantages, response_mask)
    eligible = (response_mask > 0) & ~clipped & (covariance > clip_cov_lb) & (covariance < clip_cov_ub)
    count = selection_count(clip_cov_ratio, global_token_count(response_mask))
    selected = choose_random(eligible, count, generator)
    loss = torch.maximum(loss_unclipped, loss_clipped) * (~selected).to(loss_unclipped.dtype)
    return loss, {"clipped": clipped, "selected": selected, "covariance": covariance}


def kl_cov_token_loss(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                      kl_cov_ratio: float = 2e-4, ppo_kl_coef: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """KL-Cov (Cui et al. 2025): unclipped ``−A·ratio``, plus ``β·|logp − old_logp|`` on the top-covariance tokens.

    The ``max(1, int(k·N))`` masked tokens (none when k = 0) of the global mini-batch with the largest
    ``cov = (A − mean A)·(logp − mean logp)`` are penalised. Maps: ``selected``, ``covariance``, ``abs_kl``.
    """
    ratio, log_ratio = ratio_and_log_ratio(log_probs, old_log_probs)
    abs_kl = log_ratio.abs()
    covariance = covariance_terms(log_probs, advantages, response_mask)
    selected = choose_top(covariance, response_mask, selection_count(kl_cov_ratio, global_token_count(response_mask)))
    loss = -advantages * ratio + ppo_kl_coef * abs_kl * selected.to(ratio.dtype)
    return loss, {"selected": selected, "covariance": covariance, "abs_kl": abs_kl}


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


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor,
               cliprange_value: float = 0.5, loss_agg_mode: str = "token-mean",
               global_token_count: float | None = None, global_seq_count: float | None = None,
               loss_scale_factor: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped value loss ``½·agg(max((V − R)², (clip(V, V_old ± c) − R)²))`` (verl ``compute_value_loss``).

    Returns ``(loss, {"clipped": [B, T] bool})`` where ``clipped`` marks tokens whose clipped error is larger.
    """
    clipped_values = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    error_unclipped = (values - returns).square()
    error_clipped = (clipped_values - returns).square()
    per_token = torch.maximum(error_unclipped, error_clipped)
    loss = 0.5 * aggregate_loss(per_token, response_mask, loss_agg_mode, global_token_count, global_seq_count,
                                loss_scale_factor)
    return loss, {"clipped": error_clipped > error_unclipped}


def explained_variance(values: Tensor, returns: Tensor, response_mask: Tensor) -> Tensor:
    """``1 − Var(R − V) / (Var(R) + 1e-5)`` over masked tokens (unbiased variances, as verl's critic metric)."""
    mask = response_mask.to(values.dtype)
    return 1.0 - masked_var(returns - values, mask) / (masked_var(returns, mask) + 1e-5)


__all__ = ["LOSS_AGG_MODES", "aggregate_loss", "batch_whiten", "broadcast_over_response", "choose_random", "choose_top",
           "clip_cov_token_loss", "covariance_terms", "explained_variance", "gae_advantages_and_returns",
           "group_mean", "group_normalized_advantages", "kl_cov_token_loss", "kl_penalty", "ppo_clip_token_loss",
           "ratio_and_log_ratio", "reinforce_pp_baseline_advantages", "rloo_advantages", "selection_count",
           "value_loss"]
