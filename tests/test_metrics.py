"""covgym.core.metrics: chunking invariance, covariance term, the entropy law fit and forecast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.core import metrics

SETTINGS = settings(deadline=None, max_examples=40)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 9), st.integers(2, 40), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_chunked_entropy_and_log_probs_equal_unchunked(b, t, v, chunk_size, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, t, v, generator=generator)
    tokens = torch.randint(0, v, (b, t), generator=generator)
    whole = metrics.entropy_from_logits(logits, chunk_size=10**6)
    torch.testing.assert_close(metrics.entropy_from_logits(logits, chunk_size=chunk_size), whole)
    log_probs, entropy = metrics.log_probs_and_entropy(logits, tokens, chunk_size=chunk_size)
    log_probs_whole, entropy_whole = metrics.log_probs_and_entropy(logits, tokens, chunk_size=10**6)
    torch.testing.assert_close(log_probs, log_probs_whole)
    torch.testing.assert_close(entropy, entropy_whole)
    # Against the definition −Σ p log p and log_softmax, position by position.
    reference = -(torch.softmax(logits.double(), -1) * torch.log_softmax(logits.double(), -1)).sum(-1)
    torch.testing.assert_close(entropy.double(), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_probs.double(),
                               torch.log_softmax(logits.double(), -1).gather(-1, tokens[..., None])[..., 0],
                               atol=1e-5, rtol=1e-5)


def test_entropy_is_differentiable_through_chunks():
    logits = torch.randn(7, 5, requires_grad=True)
    metrics.entropy_from_logits(logits, chunk_size=2).sum().backward()
    reference = torch.randn(7, 5)
    reference.copy_(logits.detach())
    reference.requires_grad_(True)
    (-(torch.softmax(reference, -1) * torch.log_softmax(reference, -1)).sum()).backward()
    torch.testing.assert_close(logits.grad, reference.grad, atol=1e-5, rtol=1e-5)


@SETTINGS
@given(st.floats(0.05, 3.0), st.floats(-1.0, 2.0), st.integers(0, 2**31 - 1))
def test_fit_entropy_law_recovers_known_parameters(a, b, seed):
    rng = np.random.default_rng(seed)
    entropy = np.sort(rng.uniform(0.0, 1.5, size=60))[::-1]
    reward = -a * np.exp(entropy) + b + rng.normal(0.0, 1e-4, size=entropy.size)
    fit_a, fit_b, r2 = metrics.fit_entropy_law(entropy, reward)
    assert fit_a == pytest.approx(a, abs=2e-3)
    assert fit_b == pytest.approx(b, abs=5e-3)
    assert r2 > 0.999
    summary = metrics.entropy_law_summary(entropy, reward)
    assert summary["law_ceiling"] == pytest.approx(b - a, abs=5e-3)


def test_forecast_entropy_law_predicts_the_rest_of_an_exact_run():
    entropy = np.linspace(1.5, 0.05, 40)  # falling over training, as in a run
    reward = -0.3 * np.exp(entropy) + 1.1
    forecast = metrics.forecast_entropy_law(entropy, reward, fit_fraction=0.5)
    assert forecast["law_a"] == pytest.approx(0.3, abs=1e-6)
    assert forecast["law_ceiling"] == pytest.approx(0.8, abs=1e-6)
    assert forecast["forecast_rmse"] < 1e-6 and forecast["forecast_r2"] > 0.999999
    assert forecast["fit_points"] == 20 and forecast["test_points"] == 20
    # A run that departs from the law in its second half is forecast badly, and the error says so.
    bent = reward.copy()
    bent[20:] = bent[19]
    assert metrics.forecast_entropy_law(entropy, bent)["forecast_rmse"] > 0.05


def test_forecast_rejects_bad_input():
    with pytest.raises(ValueError, match="fit_fraction"):
        metrics.forecast_entropy_law([1.0, 0.5, 0.2], [0.1, 0.2, 0.3], fit_fraction=1.0)
    with pytest.raises(ValueError, match="equal length"):
        metrics.forecast_entropy_law([1.0, 0.5], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="fit points"):
        metrics.forecast_entropy_law([1.0, 0.5], [0.1, 0.2], fit_fraction=0.5)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_token_covariance_matches_a_loop(b, t, seed):
    generator = torch.Generator().manual_seed(seed)
    log_probs = -torch.rand(b, t, generator=generator, dtype=torch.float64)
    advantages = torch.randn(b, t, generator=generator, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=generator) < 0.6).double()
    mask[0, 0] = 1.0
    cells = [(i, j) for i in range(b) for j in range(t) if mask[i, j] > 0]
    lp_mean = sum(float(log_probs[c]) for c in cells) / len(cells)
    adv_mean = sum(float(advantages[c]) for c in cells) / len(cells)
    result = metrics.token_covariance(log_probs, advantages, mask)
    for i in range(b):
        for j in range(t):
            expected = (float(advantages[i, j]) - adv_mean) * (float(log_probs[i, j]) - lp_mean) if mask[i, j] else 0.0
            assert float(result[i, j]) == pytest.approx(expected, abs=1e-12)
    assert not math.isnan(float(result.sum()))
