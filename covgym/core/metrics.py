"""Entropy and covariance measurements. Imports only torch, numpy and scipy: metrics sit below the algorithms and
the trainer, which both use them. The formulas are derived in ``docs/entropy.md``.

Everything here works over the last dimension of logits and is chunked so that ``[tokens, vocab]`` float32
probabilities are never all in memory at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

DEFAULT_CHUNK_TOKENS = 1024


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """``Σ values·mask / Σ mask`` (0 where the mask is empty)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over masked entries (Bessel-corrected by default, as verl's ``masked_var``)."""
    mean = masked_mean(values, mask)
    centered = (values - mean) * mask
    count = mask.sum()
    variance = (centered**2).sum() / count.clamp_min(1.0)
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise masked entries to unit variance (and zero mean if ``shift_mean``), as verl's ``masked_whiten``."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def _entropy_of_chunk(logits: Tensor) -> Tensor:
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return log_z - (probs * logits).sum(-1)


def entropy_from_logits(logits: Tensor, chunk_size: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """Entropy ``H = logsumexp(z) − Σ softmax(z)·z`` over the last dimension, shape ``logits.shape[:-1]``.

    Works row-chunk by row-chunk so that only ``[chunk_size, vocab]`` float32 probabilities exist at a time.
    Differentiable (each chunk keeps its own graph).
    """
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.shape[0] <= chunk_size:
        return _entropy_of_chunk(flat).reshape(logits.shape[:-1])
    parts = [_entropy_of_chunk(flat[i:i + chunk_size]) for i in range(0, flat.shape[0], chunk_size)]
    return torch.cat(parts).reshape(logits.shape[:-1])


def log_probs_and_entropy(logits: Tensor, tokens: Tensor, chunk_size: int = DEFAULT_CHUNK_TOKENS
                          ) -> tuple[Tensor, Tensor]:
    """Log-prob of ``tokens`` and entropy under ``softmax(logits)``, chunked over rows.

    Args:
        logits: ``[..., V]`` (already divided by the temperature).
        tokens: ``[...]`` long.
    Returns:
        ``(log_probs, entropy)``, both of shape ``tokens.shape``, float32.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_tokens = tokens.reshape(-1)
    log_probs, entropies = [], []
    for i in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[i:i + chunk_size].float()  # [C, V]
        log_z = torch.logsumexp(chunk, dim=-1)  # [C]
        token_logit = chunk.gather(-1, flat_tokens[i:i + chunk_size, None]).squeeze(-1)
        log_probs.append(token_logit - log_z)
        probs = torch.softmax(chunk, dim=-1)
        entropies.append(log_z - (probs * chunk).sum(-1))
    if not log_probs:
        empty = flat_logits.new_zeros(0, dtype=torch.float32)
        return empty.reshape(tokens.shape), empty.reshape(tokens.shape)
    return torch.cat(log_probs).reshape(tokens.shape), torch.cat(entropies).reshape(tokens.shape)


def predicted_entropy_change(logits: Tensor, delta_logits: Tensor) -> Tensor:
    """First-order entropy change ``−Cov_{a∼π}(log π(a), Δz(a))`` over the last dimension.

    Under ``π = softmax(z)``, ``H(softmax(z + Δz)) − H(softmax(z)) = −Cov_π(log π, Δz) + O(‖Δz‖²)``
    (Cui et al. 2025, Lemma 1). Returns a tensor of shape ``logits.shape[:-1]``.
    """
    logits = logits.double() if logits.dtype == torch.float64 else logits.float()
    log_pi = torch.log_softmax(logits, dim=-1)
    pi = log_pi.exp()
    delta = delta_logits.to(log_pi.dtype)
    mean_log_pi = (pi * log_pi).sum(-1, keepdim=True)
    mean_delta = (pi * delta).sum(-1, keepdim=True)
    covariance = (pi * (log_pi - mean_log_pi) * (delta - mean_delta)).sum(-1)
    return -covariance


def token_covariance(log_probs: Tensor, advantages: Tensor, response_mask: Tensor) -> Tensor:
    """Per-token covariance term of Clip-Cov/KL-Cov: ``(A − mean A)·(log π − mean log π)``, both detached.

    Means are over the masked tokens of the whole batch. Returns ``[B, T]`` (0 where the mask is 0).
    """
    log_probs = log_probs.detach()
    advantages = advantages.detach()
    mask = response_mask.to(log_probs.dtype)
    centered_adv = advantages - masked_mean(advantages, mask)
    centered_logp = log_probs - masked_mean(log_probs, mask)
    return centered_adv * centered_logp * mask


def _entropy_law(entropy: np.ndarray, a: float, b: float) -> np.ndarray:
    return -a * np.exp(entropy) + b


def fit_entropy_law(entropy: "np.ndarray | list[float]", reward: "np.ndarray | list[float]"
                    ) -> tuple[float, float, float]:
    """Fit ``R = −a·exp(H) + b`` (Cui et al. 2025) by least squares; returns ``(a, b, r2)``.

    The model is linear in ``(a, b)`` given ``exp(H)``, so the least-squares fit is exact (scipy's
    ``curve_fit`` is used for the covariance-free solve and its robustness to degenerate input).
    ``r2`` is the coefficient of determination (nan when the reward has no variance).
    """
    from scipy.optimize import curve_fit

    h = np.asarray(entropy, dtype=float)
    r = np.asarray(reward, dtype=float)
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    if h.size < 2:
        raise ValueError(f"fit_entropy_law needs at least 2 finite points, got {h.size}")
    x = np.exp(h)
    slope, intercept = np.polyfit(x, r, 1) if np.ptp(x) > 0 else (0.0, float(r.mean()))
    try:
        (a, b), _ = curve_fit(_entropy_law, h, r, p0=(-slope, intercept), maxfev=10000)
    except (RuntimeError, ValueError):  # degenerate input: fall back to the closed form
        a, b = -slope, intercept
    residual = r - _entropy_law(h, a, b)
    total = ((r - r.mean()) ** 2).sum()
    r2 = float(1.0 - (residual**2).sum() / total) if total > 0 else math.nan
    return float(a), float(b), r2


def entropy_law_summary(entropy: "np.ndarray | list[float]", reward: "np.ndarray | list[float]"
                        ) -> dict[str, float]:
    """``fit_entropy_law`` as named floats: ``law_a``, ``law_b``, ``law_r2`` and ``law_ceiling = b − a``.

    The ceiling is the reward the fitted law predicts at zero entropy, i.e. where a run that keeps trading
    entropy for reward must stop (Cui et al. 2025, section 2).
    """
    a, b, r2 = fit_entropy_law(entropy, reward)
    return {"law_a": a, "law_b": b, "law_r2": r2, "law_ceiling": b - a}


def forecast_entropy_law(entropy: "np.ndarray | list[float]", reward: "np.ndarray | list[float]",
                         fit_fraction: float = 0.5) -> dict[str, float]:
    """Fit ``R = −a·exp(H) + b`` on the first ``fit_fraction`` of a run and score it on the rest.

    This is the paper's forecasting claim: the early, high-entropy part of a run predicts the reward reached
    later, once entropy has fallen. Points are taken in the order given (training order).

    Returns:
        ``law_a``, ``law_b``, ``law_r2`` (fit part), ``law_ceiling`` (``b − a``), ``fit_points``,
        ``test_points``, and on the held-out part ``forecast_mae``, ``forecast_rmse``, ``forecast_r2``
        (1 − SSE/SST around the held-out mean; nan when the held-out reward is constant) and
        ``forecast_final_error`` (prediction − actual at the last point).
    """
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    h = np.asarray(entropy, dtype=float)
    r = np.asarray(reward, dtype=float)
    if h.shape != r.shape or h.ndim != 1:
        raise ValueError(f"entropy and reward must be 1-d of equal length, got {h.shape} and {r.shape}")
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    n_fit = int(round(fit_fraction * h.size))
    if n_fit < 2 or h.size - n_fit < 1:
        raise ValueError(f"forecast_entropy_law needs >= 2 fit points and >= 1 test point, got {h.size} points "
                         f"with fit_fraction={fit_fraction}")
    summary = entropy_law_summary(h[:n_fit], r[:n_fit])
    predicted = _entropy_law(h[n_fit:], summary["law_a"], summary["law_b"])
    actual = r[n_fit:]
    error = predicted - actual
    total = ((actual - actual.mean()) ** 2).sum()
    summary.update({
        "fit_points": float(n_fit),
        "test_points": float(actual.size),
        "forecast_mae": float(np.abs(error).mean()),
        "forecast_rmse": float(np.sqrt((error**2).mean())),
        "forecast_r2": float(1.0 - (error**2).sum() / total) if total > 0 else math.nan,
        "forecast_final_error": float(error[-1]),
    })
    return summary
