"""Per-step entropy-dynamics measurements against slow, obviously-correct references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.measure import entropy_dynamics as ed

SETTINGS = settings(deadline=None, max_examples=40)


@st.composite
def masked_batches(draw):
    b, t = draw(st.integers(1, 5)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, t, generator=generator) < 0.7).float()
    mask[0, 0] = 1.0  # at least one token
    log_probs = -3 * torch.rand(b, t, generator=generator, dtype=torch.float64)
    advantages = torch.randn(b, t, generator=generator, dtype=torch.float64)
    entropy = 2 * torch.rand(b, t, generator=generator, dtype=torch.float64)
    return log_probs, advantages, entropy, mask


@SETTINGS
@given(masked_batches())
def test_entropy_stats_match_numpy(case):
    _, _, entropy, mask = case
    values = [float(entropy[i, j]) for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j] > 0]
    stats = ed.entropy_stats(entropy, mask)
    assert stats["entropy_mean"] == pytest.approx(np.mean(values))
    for q in (10, 50, 90):
        assert stats[f"entropy_p{q}"] == pytest.approx(np.percentile(values, q))


@SETTINGS
@given(masked_batches(), st.floats(1e-4, 1.0))
def test_covariance_stats_match_a_loop(case, top_ratio):
    log_probs, advantages, _, mask = case
    pairs = [(float(log_probs[i, j]), float(advantages[i, j]))
             for i in range(mask.shape[0]) for j in range(mask.shape[1]) if mask[i, j] > 0]
    lp_mean = sum(p[0] for p in pairs) / len(pairs)
    adv_mean = sum(p[1] for p in pairs) / len(pairs)
    terms = sorted((lp - lp_mean) * (a - adv_mean) for lp, a in pairs)
    stats = ed.covariance_stats(log_probs, advantages, mask, top_ratio=top_ratio)
    assert stats["cov_mean"] == pytest.approx(np.cov([p[0] for p in pairs], [p[1] for p in pairs], bias=True)[0, 1],
                                              abs=1e-12)
    assert stats["cov_pos_frac"] == pytest.approx(sum(x > 0 for x in terms) / len(terms))
    n = max(1, int(top_ratio * len(terms)))
    assert stats["cov_topk_mean"] == pytest.approx(np.mean(terms[-n:]))
    assert stats["cov_std"] == pytest.approx(np.std(terms), abs=1e-12)
    assert stats["cov_p50"] == pytest.approx(np.percentile(terms, 50))
    assert stats["cov_p01"] <= stats["cov_p25"] <= stats["cov_p75"] <= stats["cov_p99"]
    assert stats["cov_in_band_frac"] == pytest.approx(sum(1.0 < x < 5.0 for x in terms) / len(terms))
    assert stats["cov_tokens"] == len(terms)


def test_empty_mask_gives_nan_not_an_error():
    zeros = torch.zeros(2, 3)
    assert math.isnan(ed.entropy_stats(zeros, zeros)["entropy_mean"])
    stats = ed.covariance_stats(zeros, zeros, zeros)
    assert math.isnan(stats["cov_mean"]) and stats["cov_tokens"] == 0.0
    with pytest.raises(ValueError, match="top_ratio"):
        ed.covariance_stats(zeros, zeros, zeros, top_ratio=0.0)


@SETTINGS
@given(st.lists(st.integers(0, 3), min_size=1, max_size=16), st.integers(0, 2**31 - 1))
def test_response_level_covariance_matches_per_group_numpy(groups, seed):
    generator = torch.Generator().manual_seed(seed)
    n = len(groups)
    x = -torch.rand(n, generator=generator, dtype=torch.float64)
    a = torch.randn(n, generator=generator, dtype=torch.float64)
    g = torch.tensor(groups)
    stats = ed.response_level_covariance(x, a, g)
    expected = [np.cov(x[g == k].numpy(), a[g == k].numpy(), bias=True)[0, 1]
                for k in sorted(set(groups)) if groups.count(k) >= 2]
    if not expected:
        assert stats["cov_response_groups"] == 0 and math.isnan(stats["cov_response_mean"])
        return
    assert stats["cov_response_groups"] == len(expected)
    assert stats["cov_response_mean"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert stats["cov_response_pos_frac"] == pytest.approx(np.mean([e > 0 for e in expected]))


def test_sequence_mean_is_length_normalised_log_prob():
    log_probs = torch.tensor([[0.0, -1.0, -3.0], [0.0, -2.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(ed.sequence_mean(log_probs, mask), torch.tensor([-2.0, -2.0], dtype=torch.float64))


def _entropy_np(z: np.ndarray) -> float:
    p = np.exp(z - z.max())
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


@SETTINGS
@given(st.integers(1, 9), st.integers(2, 30), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_entropy_change_per_position_and_chunks(n, v, chunk_size, seed):
    generator = torch.Generator().manual_seed(seed)
    before = 2 * torch.randn(n, v, generator=generator)
    after = before + 1e-3 * torch.randn(n, v, generator=generator)
    actual, predicted = ed.entropy_change_per_position(before, after, chunk_size=chunk_size)
    for i in range(n):
        z0, z1 = before[i].double().numpy(), after[i].double().numpy()
        assert float(actual[i]) == pytest.approx(_entropy_np(z1) - _entropy_np(z0), abs=1e-12)
        p = np.exp(z0 - z0.max()); p /= p.sum()
        d = z1 - z0
        cov = (p * np.log(p) * d).sum() - (p * np.log(p)).sum() * (p * d).sum()
        assert float(predicted[i]) == pytest.approx(-cov, abs=1e-12)
    # Chunk lists with boundaries that differ between the two inputs give the same numbers.
    split_before = list(torch.split(before, 2))
    split_after = list(torch.split(after, 3))
    stats_tensor = ed.entropy_change_stats(before, after)
    stats_lists = ed.entropy_change_stats(split_before, split_after, chunk_size=chunk_size)
    for key, value in stats_tensor.items():
        if math.isnan(value):
            assert math.isnan(stats_lists[key])
        else:
            assert stats_lists[key] == pytest.approx(value, rel=1e-9, abs=1e-15)


def test_small_updates_have_actual_and_predicted_changes_that_agree():
    generator = torch.Generator().manual_seed(0)
    before = 3 * torch.randn(200, 50, generator=generator)
    after = before + 1e-3 * torch.randn(200, 50, generator=generator)
    stats = ed.entropy_change_stats(before, after, chunk_size=64)
    assert stats["dH_corr"] > 0.999
    assert stats["dH_slope"] == pytest.approx(1.0, abs=1e-2)
    assert stats["dH_rel_error"] < 1e-2
    assert stats["dH_positions"] == 200
    # A large step breaks the first-order approximation visibly.
    far = ed.entropy_change_stats(before, before + 3 * torch.randn(200, 50, generator=generator))
    assert far["dH_rel_error"] > stats["dH_rel_error"]


def test_entropy_change_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same number of rows"):
        ed.entropy_change_stats(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="vocabulary"):
        ed.entropy_change_stats(torch.zeros(3, 4), torch.zeros(3, 5))


@SETTINGS
@given(st.integers(1, 12), st.integers(2, 20), st.integers(0, 2**31 - 1))
def test_polarity_stats_match_a_loop_and_probs_input(n, v, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, v, generator=generator, dtype=torch.float64)
    tokens = torch.randint(0, v, (n,), generator=generator)
    advantages = torch.randn(n, generator=generator, dtype=torch.float64)
    advantages[::3] = 0.0
    log_pa = torch.log_softmax(logits, -1)[torch.arange(n), tokens]
    signs = ed.polarity(log_pa, logits, advantages)
    # Reference: the sign of −Cov_π(log π, Δz) for the single-token step Δz = A·(e_a − π).
    for i in range(n):
        pi = torch.softmax(logits[i], -1)
        delta = advantages[i] * (torch.nn.functional.one_hot(tokens[i], v).double() - pi)
        log_pi = torch.log(pi)
        cov = (pi * log_pi * delta).sum() - (pi * log_pi).sum() * (pi * delta).sum()
        assert int(signs[i]) == int(torch.sign(-cov)) or abs(float(cov)) < 1e-12
    probs_signs = ed.polarity(log_pa, torch.softmax(logits, -1), advantages, logits_are_probs=True)
    assert torch.equal(probs_signs, signs)
    stats = ed.polarity_stats(log_pa, list(torch.split(logits, 5)), advantages, chunk_size=2)
    positive, negative = advantages > 0, advantages < 0
    for name, subset in (("pos_adv", positive), ("neg_adv", negative)):
        if subset.any():
            assert stats[f"polarity_contract_frac_{name}"] == pytest.approx(float((signs[subset] < 0).double().mean()))
            assert stats[f"polarity_expand_frac_{name}"] == pytest.approx(float((signs[subset] > 0).double().mean()))
        else:
            assert math.isnan(stats[f"polarity_contract_frac_{name}"])


def test_polarity_of_a_dominant_token_with_positive_advantage_contracts():
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    log_p = torch.log_softmax(logits, -1)[0]
    advantage = torch.tensor([1.0], dtype=torch.float64)
    assert int(ed.polarity(log_p[:1], logits, advantage)[0]) == -1  # reinforcing the likely token sharpens
    assert int(ed.polarity(log_p[1:2], logits, advantage)[0]) == 1  # reinforcing a rare token flattens
    assert int(ed.polarity(log_p[1:2], logits, -advantage)[0]) == -1  # punishing a rare token sharpens
