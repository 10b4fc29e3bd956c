"""Per-step measurements of the entropy mechanism, each returning a flat ``dict[str, float]``.

The trainer calls these on the tensors it already has (rollout entropies, log-probs, advantages, the
full-vocabulary logits of an update batch before and after the optimizer step) and writes the dicts into
``metrics.jsonl`` under the stable names below. Formulas and their reading are in ``docs/entropy.md``; the
theory is Cui et al. 2025, section 3; the first-order law and the entropy-polarity formula are derived in
``docs/entropy.md`` ("The theory, derived").

Imports only torch and ``covgym.core.metrics`` (metrics sit below algorithms and the trainer).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from covgym.core.metrics import DEFAULT_CHUNK_TOKENS, masked_mean, predicted_entropy_change, token_covariance

ENTROPY_QUANTILES = (0.10, 0.50, 0.90)
COVARIANCE_QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
"""Quantiles reported by ``covariance_stats`` as ``cov_p01`` ... ``cov_p99`` (plotted as bands)."""

LogitsInput = Tensor | Sequence[Tensor]


def _quantile_key(prefix: str, q: float) -> str:
    return f"{prefix}_p{round(q * 100):02d}"


def _masked_values(values: Tensor, mask: Tensor | None) -> Tensor:
    """The entries of ``values`` where ``mask`` is nonzero, flattened, as float64 on CPU."""
    if mask is None:
        return values.detach().reshape(-1).double().cpu()
    if mask.shape != values.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(values.shape)}")
    return values.detach()[mask.detach() > 0].double().cpu()


def _quantiles(values: Tensor, qs: Iterable[float], prefix: str) -> dict[str, float]:
    qs = tuple(qs)
    if values.numel() == 0:
        return {_quantile_key(prefix, q): math.nan for q in qs}
    result = torch.quantile(values, torch.tensor(qs, dtype=values.dtype))
    return {_quantile_key(prefix, q): float(v) for q, v in zip(qs, result)}


def _pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two 1-d float64 tensors (nan when either is constant or too short)."""
    if x.numel() < 2:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum()) / denominator if denominator > 0 else math.nan


# --------------------------------------------------------------------------------------------- entropy
def entropy_stats(entropy: Tensor, mask: Tensor | None = None) -> dict[str, float]:
    """Mean and percentiles of token entropy over the response positions.

    Args:
        entropy: ``[B, T]`` per-token entropy (e.g. ``RolloutBatch.entropies``).
        mask: ``[B, T]`` response mask (None: every entry counts).
    Returns:
        ``entropy_mean``, ``entropy_p10``, ``entropy_p50``, ``entropy_p90`` (nan when no token is masked in).
    """
    values = _masked_values(entropy, mask)
    stats = {"entropy_mean": float(values.mean()) if values.numel() else math.nan}
    stats.update(_quantiles(values, ENTROPY_QUANTILES, "entropy"))
    return stats


# --------------------------------------------------------------------------------------------- covariance
def covariance_stats(log_probs: Tensor, advantages: Tensor, mask: Tensor, top_ratio: float = 2e-4,
                     clip_cov_lb: float = 1.0, clip_cov_ub: float = 5.0) -> dict[str, float]:
    """Distribution of the token covariance term ``(A − mean A)·(log π − mean log π)`` of Clip-Cov/KL-Cov.

    The mean of this term over the masked tokens is the batch covariance Cov(log π, A), whose sign tells
    whether the update lowers (positive) or raises (negative) entropy under natural policy gradient.

    Args:
        log_probs, advantages, mask: ``[B, T]``; means are over the masked tokens of the whole batch.
        top_ratio: share of tokens in ``cov_topk_mean`` (n = max(1, int(top_ratio·#tokens)), KL-Cov's rule).
        clip_cov_lb, clip_cov_ub: Clip-Cov's band; ``cov_in_band_frac`` is the share of tokens inside it.
    Returns:
        ``cov_mean``, ``cov_std``, ``cov_pos_frac``, ``cov_topk_mean``, ``cov_max``, ``cov_min``,
        ``cov_in_band_frac``, ``cov_tokens`` and the quantiles ``cov_p01`` ... ``cov_p99``.
    """
    if not 0.0 < top_ratio <= 1.0:
        raise ValueError(f"top_ratio must be in (0, 1], got {top_ratio}")
    covariance = token_covariance(log_probs, advantages, mask)  # [B, T]
    values = _masked_values(covariance, mask)
    count = values.numel()
    if count == 0:
        nan_keys = ("cov_mean", "cov_std", "cov_pos_frac", "cov_topk_mean", "cov_max", "cov_min", "cov_in_band_frac")
        stats = {key: math.nan for key in nan_keys}
        stats["cov_tokens"] = 0.0
        stats.update(_quantiles(values, COVARIANCE_QUANTILES, "cov"))
        return stats
    top_n = max(1, int(top_ratio * count))
    stats = {
        "cov_mean": float(values.mean()),
        "cov_std": float(values.std(unbiased=False)),
        "cov_pos_frac": float((values > 0).double().mean()),
        "cov_topk_mean": float(torch.topk(values, top_n).values.mean()),
        "cov_max": float(values.max()),
        "cov_min": float(values.min()),
        "cov_in_band_frac": float(((values > clip_cov_lb) & (values < clip_cov_ub)).double().mean()),
        "cov_tokens": float(count),
    }
    stats.update(_quantiles(values, COVARIANCE_QUANTILES, "cov"))
    return stats


def sequence_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence mean over the masked positions, ``[B, T] -> [B]`` (0 for a sequence with no token).

    With ``values = log_probs`` this is the length-normalised log-prob of each response.
    """
    return masked_mean(values.detach().double(), mask.detach().double(), dim=-1)


def response_level_covariance(seq_log_prob_mean: Tensor, advantages_seq: Tensor, group_ids: Tensor
                              ) -> dict[str, float]:
    """The paper's bandit view: per group, Cov(length-normalised log-prob of a response, its advantage).

    Each prompt is one state and each response one action; within a group the (population) covariance
    ``mean_i[(x_i − x̄)(A_i − Ā)]`` is computed, then averaged over the groups with at least two responses.

    Args:
        seq_log_prob_mean: ``[B]`` mean token log-prob of each response (``sequence_mean(log_probs, mask)``).
        advantages_seq: ``[B]`` one advantage per response.
        group_ids: ``[B]`` responses to the same prompt share an id.
    Returns:
        ``cov_response_mean`` (mean over groups), ``cov_response_std``, ``cov_response_pos_frac`` (share of
        groups with positive covariance), ``corr_response_mean`` (mean within-group Pearson correlation over
        groups where it is defined) and ``cov_response_groups`` (groups used).
    """
    x = seq_log_prob_mean.detach().reshape(-1).double().cpu()
    a = advantages_seq.detach().reshape(-1).double().cpu()
    g = group_ids.detach().reshape(-1).cpu()
    if not x.shape == a.shape == g.shape:
        raise ValueError(f"seq_log_prob_mean, advantages_seq and group_ids must have equal length, got "
                         f"{tuple(x.shape)}, {tuple(a.shape)}, {tuple(g.shape)}")
    covariances, correlations = [], []
    for group in torch.unique(g):
        members = g == group
        if int(members.sum()) < 2:
            continue
        xg, ag = x[members], a[members]
        covariances.append(float(((xg - xg.mean()) * (ag - ag.mean())).mean()))
        correlation = _pearson(xg, ag)
        if not math.isnan(correlation):
            correlations.append(correlation)
    if not covariances:
        return {"cov_response_mean": math.nan, "cov_response_std": math.nan, "cov_response_pos_frac": math.nan,
                "corr_response_mean": math.nan, "cov_response_groups": 0.0}
    values = torch.tensor(covariances, dtype=torch.float64)
    return {
        "cov_response_mean": float(values.mean()),
        "cov_response_std": float(values.std(unbiased=False)),
        "cov_response_pos_frac": float((values > 0).double().mean()),
        "corr_response_mean": sum(correlations) / len(correlations) if correlations else math.nan,
        "cov_response_groups": float(len(covariances)),
    }


# --------------------------------------------------------------------------------------------- entropy change
def _chunks(logits: LogitsInput, chunk_size: int) -> Iterator[Tensor]:
    """Row chunks ``[C, V]`` of a ``[..., V]`` tensor or of each tensor in a list."""
    parts = [logits] if isinstance(logits, Tensor) else list(logits)
    for part in parts:
        flat = part.reshape(-1, part.shape[-1])
        for start in range(0, flat.shape[0], chunk_size):
            yield flat[start:start + chunk_size]


def _exact_entropy(logits: Tensor) -> Tensor:
    log_pi = torch.log_softmax(logits, dim=-1)
    return -(log_pi.exp() * log_pi).sum(-1)


def entropy_change_per_position(logits_before: LogitsInput, logits_after: LogitsInput,
                                chunk_size: int = DEFAULT_CHUNK_TOKENS, dtype: torch.dtype = torch.float64
                                ) -> tuple[Tensor, Tensor]:
    """Actual and first-order predicted entropy change at each position, both ``[N]`` float64 on CPU.

    actual = H(softmax(z_after)) − H(softmax(z_before)); predicted = −Cov_{a∼π_before}(log π, Δz) with
    Δz = z_after − z_before. Computed in ``dtype`` (float64 by default: an update's per-position change can be
    ~1e-5, below float32 rounding of the entropy itself), ``chunk_size`` rows at a time.

    Args:
        logits_before, logits_after: ``[N, V]`` (or ``[..., V]``) tensors, or lists of such chunks with matching
            row counts; only the response positions should be passed.
    """
    actual_parts, predicted_parts = [], []
    before_chunks, after_chunks = _chunks(logits_before, chunk_size), _chunks(logits_after, chunk_size)
    for before, after in _zip_chunks(before_chunks, after_chunks):
        before = before.detach().to(dtype)
        after = after.detach().to(before.device, dtype)
        actual_parts.append((_exact_entropy(after) - _exact_entropy(before)).cpu())
        predicted_parts.append(predicted_entropy_change(before, after - before).to(torch.float64).cpu())
    if not actual_parts:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty.clone()
    return torch.cat(actual_parts).double(), torch.cat(predicted_parts).double()


def _zip_chunks(first: Iterator[Tensor], second: Iterator[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
    """Pair row chunks of two inputs whose chunk boundaries may differ (re-slicing to align rows)."""
    buffer_a: Tensor | None = None
    buffer_b: Tensor | None = None
    while True:
        if buffer_a is None or buffer_a.shape[0] == 0:
            buffer_a = next(first, None)
        if buffer_b is None or buffer_b.shape[0] == 0:
            buffer_b = next(second, None)
        if buffer_a is None or buffer_b is None:
            if buffer_a is not None or buffer_b is not None:
                raise ValueError("logits_before and logits_after must have the same number of rows")
            return
        if buffer_a.shape[-1] != buffer_b.shape[-1]:
            raise ValueError(f"logits_before and logits_after must have the same vocabulary size, got "
                             f"{buffer_a.shape[-1]} and {buffer_b.shape[-1]}")
        rows = min(buffer_a.shape[0], buffer_b.shape[0])
        yield buffer_a[:rows], buffer_b[:rows]
        buffer_a, buffer_b = buffer_a[rows:], buffer_b[rows:]


def entropy_change_stats(logits_before: LogitsInput, logits_after: LogitsInput,
                         chunk_size: int = DEFAULT_CHUNK_TOKENS) -> dict[str, float]:
    """Predicted vs. actual entropy change of one update over the given positions.

    Args:
        logits_before, logits_after: full-vocabulary logits at the update batch's response positions before
            and after the optimizer step (divided by the temperature): ``[N, V]`` tensors or lists of chunks.
    Returns:
        ``dH_actual_mean``, ``dH_predicted_mean``; ``dH_corr`` (Pearson across positions);
        ``dH_ratio`` (``dH_actual_mean / dH_predicted_mean``); ``dH_slope`` (least-squares slope of actual on
        predicted through 0: 1 when first order is exact); ``dH_rel_error`` (‖actual − predicted‖/‖actual‖);
        ``dH_sign_agree_frac``; ``dH_actual_abs_mean``; ``dH_positions``.
    """
    actual, predicted = entropy_change_per_position(logits_before, logits_after, chunk_size)
    n = actual.numel()
    if n == 0:
        keys = ("dH_actual_mean", "dH_predicted_mean", "dH_corr", "dH_ratio", "dH_slope", "dH_rel_error",
                "dH_sign_agree_frac", "dH_actual_abs_mean")
        return {**{key: math.nan for key in keys}, "dH_positions": 0.0}
    actual_mean, predicted_mean = float(actual.mean()), float(predicted.mean())
    predicted_sq = float((predicted * predicted).sum())
    actual_norm = float(actual.norm())
    return {
        "dH_actual_mean": actual_mean,
        "dH_predicted_mean": predicted_mean,
        "dH_corr": _pearson(actual, predicted),
        "dH_ratio": actual_mean / predicted_mean if predicted_mean != 0 else math.nan,
        "dH_slope": float((actual * predicted).sum()) / predicted_sq if predicted_sq > 0 else math.nan,
        "dH_rel_error": float((actual - predicted).norm()) / actual_norm if actual_norm > 0 else math.nan,
        "dH_sign_agree_frac": float((torch.sign(actual) == torch.sign(predicted)).double().mean()),
        "dH_actual_abs_mean": float(actual.abs().mean()),
        "dH_positions": float(n),
    }


# --------------------------------------------------------------------------------------------- polarity
def _polarity_parts(log_probs_of_sampled: Tensor, logits: LogitsInput, advantages: Tensor,
                    logits_are_probs: bool, chunk_size: int) -> tuple[Tensor, Tensor]:
    """``(score [N], entropy [N])``, float64 on CPU; see ``polarity_score``."""
    log_pa = log_probs_of_sampled.detach().reshape(-1).double().cpu()
    adv = advantages.detach().reshape(-1).double().cpu()
    if log_pa.shape != adv.shape:
        raise ValueError(f"advantages has {adv.numel()} entries, expected {log_pa.numel()} (log_probs_of_sampled)")
    entropies, second_terms = [], []
    for chunk in _chunks(logits, chunk_size):
        chunk = chunk.detach().double()
        if logits_are_probs:
            pi = chunk / chunk.sum(-1, keepdim=True)
            log_pi = torch.log(pi.clamp_min(1e-300))
        else:
            log_pi = torch.log_softmax(chunk, dim=-1)
            pi = log_pi.exp()
        entropy = -(pi * log_pi).sum(-1)  # [C]
        entropies.append(entropy.cpu())
        second_terms.append((pi * pi * (log_pi + entropy[:, None])).sum(-1).cpu())  # Σ_b π_b²(log π_b + H)
    empty = torch.zeros(0, dtype=torch.float64)
    entropy = torch.cat(entropies) if entropies else empty
    if entropy.numel() != log_pa.numel():
        raise ValueError(f"logits have {entropy.numel()} rows, expected {log_pa.numel()} (log_probs_of_sampled)")
    second = torch.cat(second_terms) if second_terms else empty
    bracket = log_pa.exp() * (log_pa + entropy) - second
    return -adv * bracket, entropy


def polarity_score(log_probs_of_sampled: Tensor, logits: LogitsInput, advantages: Tensor,
                   logits_are_probs: bool = False, chunk_size: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """First-order entropy change per unit step of a single-token policy-gradient update, ``[N]`` float64.

    For a sampled token a with advantage A, the logit step of ``A·log π(a)`` is Δz = η·A·(e_a − π), and
    ΔH ≈ −η·A·[π_a·(log π_a + H) − Σ_b π_b²·(log π_b + H)]. This returns the value at η = 1.

    Args:
        log_probs_of_sampled: ``[N]`` log π(a) of the sampled tokens (under the same distribution as ``logits``).
        logits: ``[N, V]`` logits (or probabilities when ``logits_are_probs``), tensor or list of chunks.
        advantages: ``[N]``.
    """
    return _polarity_parts(log_probs_of_sampled, logits, advantages, logits_are_probs, chunk_size)[0]


def polarity(log_probs_of_sampled: Tensor, logits: LogitsInput, advantages: Tensor,
             logits_are_probs: bool = False, chunk_size: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """Entropy polarity of each token's update: ``[N]`` long, +1 expands entropy, −1 contracts it, 0 neither.

    The sign of ``polarity_score`` (see there for the formula); the arguments are the same.
    """
    return torch.sign(polarity_score(log_probs_of_sampled, logits, advantages, logits_are_probs, chunk_size)).long()


def polarity_stats(log_probs_of_sampled: Tensor, logits: LogitsInput, advantages: Tensor,
                   logits_are_probs: bool = False, chunk_size: int = DEFAULT_CHUNK_TOKENS) -> dict[str, float]:
    """Share of contracting and expanding tokens, split by advantage sign.

    Returns:
        ``polarity_contract_frac_pos_adv`` / ``polarity_expand_frac_pos_adv``: among tokens with A > 0;
        ``polarity_contract_frac_neg_adv`` / ``polarity_expand_frac_neg_adv``: among tokens with A < 0;
        ``polarity_contract_frac`` / ``polarity_expand_frac``: among tokens with A ≠ 0;
        ``polarity_score_mean``: mean first-order ΔH per unit step over all tokens;
        ``polarity_threshold_agree_frac``: share of A ≠ 0 tokens where the shortcut rule "contracts iff
        A·(π_a − exp(−H)) > 0" gives the same sign as the exact first-order formula.
        Fractions are nan when their subset is empty.
    """
    score, entropy = _polarity_parts(log_probs_of_sampled, logits, advantages, logits_are_probs, chunk_size)
    sign = torch.sign(score)
    adv = advantages.detach().reshape(-1).double().cpu()
    log_pa = log_probs_of_sampled.detach().reshape(-1).double().cpu()

    def share(selected: Tensor, subset: Tensor) -> float:
        count = int(subset.sum())
        return float((selected & subset).sum()) / count if count else math.nan

    positive, negative = adv > 0, adv < 0
    nonzero = positive | negative
    contract, expand = sign < 0, sign > 0
    shortcut_contract = (adv * (log_pa.exp() - torch.exp(-entropy))) > 0
    return {
        "polarity_contract_frac_pos_adv": share(contract, positive),
        "polarity_expand_frac_pos_adv": share(expand, positive),
        "polarity_contract_frac_neg_adv": share(contract, negative),
        "polarity_expand_frac_neg_adv": share(expand, negative),
        "polarity_contract_frac": share(contract, nonzero),
        "polarity_expand_frac": share(expand, nonzero),
        "polarity_score_mean": float(score.mean()) if score.numel() else math.nan,
        "polarity_threshold_agree_frac": share(shortcut_contract == contract, nonzero),
    }
