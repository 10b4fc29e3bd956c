"""Clip-Cov/KL-Cov token selection: a ratio of 0 acts on no token (the paper's "off"), in the functions and classes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import covgym.algorithms as algorithms
from covgym.algorithms import functional as F
from covgym.algorithms.token_selection import selection_count


def inputs(seed: int = 0, rows: int = 4, length: int = 6):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(rows, length, generator=generator) * 3  # [B, T]
    log_probs = old + (torch.rand(rows, length, generator=generator) - 0.5)  # off-policy: |log ratio| > 0
    advantages = torch.randn(rows, 1, generator=generator).expand(rows, length).clone()
    mask = torch.ones(rows, length)
    mask[0, 4:] = 0.0
    return log_probs, old, advantages, mask


@given(ratio=st.floats(0.0, 1.0), tokens=st.integers(0, 10_000))
def test_selection_count_is_zero_exactly_when_the_ratio_is_zero(ratio, tokens):
    count = selection_count(ratio, tokens)
    if ratio == 0.0:
        assert count == 0
    else:
        assert count == max(int(ratio * tokens), 1)  # verl's rule, with its floor of one token


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 1000))
def test_kl_cov_with_ratio_zero_penalises_no_token(seed):
    log_probs, old, advantages, mask = inputs(seed)
    loss, maps = F.kl_cov_token_loss(log_probs, old, advantages, mask, kl_cov_ratio=0.0, ppo_kl_coef=1.0)
    assert not maps["selected"].any()
    ratio, _ = F.ratio_and_log_ratio(log_probs, old)
    torch.testing.assert_close(loss, -advantages * ratio)  # the unclipped policy-gradient loss, nothing added
    _, some = F.kl_cov_token_loss(log_probs, old, advantages, mask, kl_cov_ratio=1e-6, ppo_kl_coef=1.0)
    assert int(some["selected"].sum()) == 1  # a tiny positive ratio keeps verl's one-token floor


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 1000))
def test_clip_cov_with_ratio_zero_detaches_no_token(seed):
    log_probs, old, advantages, mask = inputs(seed)
    wide = {"clip_ratio_low": 10.0, "clip_ratio_high": 10.0, "clip_cov_lb": -1e9, "clip_cov_ub": 1e9}  # all eligible
    loss, maps = F.clip_cov_token_loss(log_probs, old, advantages, mask, torch.Generator().manual_seed(seed),
                                       clip_cov_ratio=0.0, **wide)
    assert not maps["selected"].any()
    plain, _ = F.ppo_clip_token_loss(log_probs, old, advantages, 10.0, 10.0, None)
    torch.testing.assert_close(loss, plain)
    _, some = F.clip_cov_token_loss(log_probs, old, advantages, mask, torch.Generator().manual_seed(seed),
                                    clip_cov_ratio=1e-6, **wide)
    assert int(some["selected"].sum()) == 1


@pytest.mark.parametrize("name, field", [("clip_cov", "clip_cov_ratio"), ("kl_cov", "kl_cov_ratio")])
def test_the_algorithm_classes_reject_ratio_zero(name, field):
    """The presets refuse a ratio of 0 (use grpo instead); only the bare functions accept it, as 'off'."""
    with pytest.raises(ValueError, match=field):
        algorithms.get(name)(**{field: 0.0})
