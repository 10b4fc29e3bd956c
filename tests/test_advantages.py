"""Advantage estimators: slow-loop references, group invariants, and hand-derived numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import covgym.algorithms as algorithms
from covgym.algorithms import functional as F
from covgym.core.batch import RolloutBatch

SETTINGS = settings(deadline=None, max_examples=50)


# ---------------------------------------------------------------------------- slow references
def slow_group_members(groups: list[int], i: int) -> list[int]:
    return [j for j in range(len(groups)) if groups[j] == groups[i]]


def slow_grpo(scores: list[float], groups: list[int], norm: bool = True, eps: float = 1e-6) -> list[float]:
    out = []
    for i, score in enumerate(scores):
        members = [scores[j] for j in slow_group_members(groups, i)]
        if len(members) == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(members) / len(members)
            std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
        out.append((score - mean) / (std + eps) if norm else score - mean)
    return out


def slow_rloo(scores: list[float], groups: list[int]) -> list[float]:
    out = []
    for i, score in enumerate(scores):
        others = [scores[j] for j in slow_group_members(groups, i) if j != i]
        out.append(score - sum(others) / len(others) if others else score)
    return out


def slow_whiten(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    if len(values) > 1:
        variance *= len(values) / (len(values) - 1)
    return [(v - mean) / math.sqrt(variance + 1e-8) for v in values]


def slow_reinforce_pp(scores: list[float], groups: list[int], mask: list[list[float]]) -> list[list[float]]:
    baselined = []
    for i, score in enumerate(scores):
        members = [scores[j] for j in slow_group_members(groups, i)]
        baselined.append(score - (sum(members) / len(members) if len(members) > 1 else 0.0))
    flat = [baselined[i] for i, row in enumerate(mask) for m in row if m > 0]
    whitened = iter(slow_whiten(flat)) if flat else iter([])
    return [[next(whitened) if m > 0 else 0.0 for m in row] for row in mask]


def slow_gae(rewards: list[list[float]], values: list[list[float]], mask: list[list[float]], gamma: float,
             lam: float) -> tuple[list[list[float]], list[list[float]]]:
    raw, returns = [], []
    for r_row, v_row, m_row in zip(rewards, values, mask):
        positions = [t for t, m in enumerate(m_row) if m > 0]  # response positions, in order
        advantage = [0.0] * len(m_row)
        running, next_value = 0.0, 0.0
        for t in reversed(positions):
            delta = r_row[t] + gamma * next_value - v_row[t]
            running = delta + gamma * lam * running
            next_value = v_row[t]
            advantage[t] = running
        raw.append(advantage)
        returns.append([advantage[t] + v_row[t] if m_row[t] > 0 else 0.0 for t in range(len(m_row))])
    flat = [raw[i][t] for i, row in enumerate(mask) for t, m in enumerate(row) if m > 0]
    whitened = iter(slow_whiten(flat)) if flat else iter([])
    advantages = [[next(whitened) if m > 0 else 0.0 for m in row] for row in mask]
    return advantages, returns


# ---------------------------------------------------------------------------- strategies
@st.composite
def grouped_scores(draw, max_groups: int = 5, max_size: int = 6):
    sizes = draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_groups))
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    order = draw(st.permutations(list(range(len(groups)))))
    groups = [groups[i] * 7 + 3 for i in order]  # arbitrary, non-contiguous ids in arbitrary order
    scores = draw(st.lists(st.integers(-20, 20).map(lambda x: x / 4), min_size=len(groups), max_size=len(groups)))
    return scores, groups


def make_mask(generator: torch.Generator, b: int, t: int, p: float = 0.6) -> torch.Tensor:
    return (torch.rand(b, t, generator=generator, dtype=torch.float64) < p).double()


def make_batch(scores: list[float], groups: list[int], mask: torch.Tensor, values: torch.Tensor | None = None
               ) -> RolloutBatch:
    b, t = mask.shape
    return RolloutBatch(input_ids=torch.zeros(b, t, dtype=torch.long),
                        attention_mask=torch.ones(b, t, dtype=torch.long),
                        response_mask=mask, old_log_probs=torch.zeros(b, t, dtype=mask.dtype),
                        rewards=torch.tensor(scores, dtype=mask.dtype), group_ids=torch.tensor(groups),
                        entropies=torch.zeros(b, t, dtype=mask.dtype), values=values)


# ---------------------------------------------------------------------------- group estimators vs loops
@SETTINGS
@given(grouped_scores(), st.booleans())
def test_grpo_matches_slow_loop(data, norm):
    scores, groups = data
    got = F.group_normalized_advantages(torch.tensor(scores), torch.tensor(groups), norm)
    torch.testing.assert_close(got.double(), torch.tensor(slow_grpo(scores, groups, norm), dtype=torch.float64),
                               atol=1e-5, rtol=1e-5)


@SETTINGS
@given(grouped_scores())
def test_rloo_matches_slow_loop(data):
    scores, groups = data
    got = F.rloo_advantages(torch.tensor(scores), torch.tensor(groups))
    torch.testing.assert_close(got.double(), torch.tensor(slow_rloo(scores, groups), dtype=torch.float64),
                               atol=1e-5, rtol=1e-5)


@SETTINGS
@given(grouped_scores(), st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_reinforce_pp_matches_slow_loop(data, t, seed):
    scores, groups = data
    mask = make_mask(torch.Generator().manual_seed(seed), len(scores), t)
    got = F.reinforce_pp_baseline_advantages(torch.tensor(scores, dtype=torch.float64), torch.tensor(groups), mask)
    expected = torch.tensor(slow_reinforce_pp(scores, groups, mask.tolist()), dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 9), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_gae_matches_plain_loop(b, t, gamma, lam, seed):
    generator = torch.Generator().manual_seed(seed)
    mask = make_mask(generator, b, t)
    rewards = torch.randn(b, t, generator=generator, dtype=torch.float64)
    values = torch.randn(b, t, generator=generator, dtype=torch.float64)
    advantages, returns = F.gae_advantages_and_returns(rewards, values, mask, gamma, lam)
    slow_adv, slow_ret = slow_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor(slow_adv, dtype=torch.float64), atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(returns, torch.tensor(slow_ret, dtype=torch.float64), atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------- group invariants
GROUP_ALGORITHMS = ["grpo", "dr_grpo", "rloo", "reinforce_pp", "clip_cov", "kl_cov", "clip_higher", "gpg",
                    "entropy_bonus"]


def per_sequence(name: str, scores: list[float], groups: list[int], mask: torch.Tensor) -> torch.Tensor:
    """Advantages through the registered algorithm, read off each sequence's first response token."""
    advantages = algorithms.get(name)().advantages(make_batch(scores, groups, mask))
    first = mask.argmax(dim=1)
    return advantages[torch.arange(len(scores)), first].double()


def full_mask(n: int, t: int = 3) -> torch.Tensor:
    return torch.ones(n, t, dtype=torch.float64)


@SETTINGS
@given(grouped_scores(), st.sampled_from(["grpo", "dr_grpo", "rloo"]))
def test_group_advantages_have_zero_mean_per_group(data, name):
    scores, groups = data
    adv = per_sequence(name, scores, groups, full_mask(len(scores)))
    for group in set(groups):
        members = [i for i, g in enumerate(groups) if g == group]
        if len(members) > 1:
            assert abs(float(adv[members].sum())) < 1e-4


@SETTINGS
@given(grouped_scores(), st.sampled_from([n for n in GROUP_ALGORITHMS if n != "gpg"]),  # GPG's α counts non-zeros
       st.integers(-8, 8).map(lambda x: x / 2),
       st.data())
def test_group_advantages_ignore_a_constant_added_to_a_group(data, name, constant, draw):
    scores, groups = data
    group = draw.draw(st.sampled_from(sorted(set(groups))))
    assume(groups.count(group) > 1)  # a group of one has no baseline: its advantage is its score
    shifted = [s + constant if g == group else s for s, g in zip(scores, groups)]
    mask = full_mask(len(scores))
    torch.testing.assert_close(per_sequence(name, shifted, groups, mask), per_sequence(name, scores, groups, mask),
                               atol=1e-4, rtol=1e-4)


@SETTINGS
@given(grouped_scores(), st.sampled_from([0.5, 2.0, 3.0]))
def test_group_advantages_scale_as_expected(data, scale):
    scores, groups = data
    mask = full_mask(len(scores))
    scaled = [s * scale for s in scores]
    for name in ("dr_grpo", "rloo"):  # linear in the rewards
        torch.testing.assert_close(per_sequence(name, scaled, groups, mask),
                                   scale * per_sequence(name, scores, groups, mask), atol=1e-4, rtol=1e-4)
    # reinforce_pp whitens over the batch: scale-free (up to its 1e-8 variance floor)
    torch.testing.assert_close(per_sequence("reinforce_pp", scaled, groups, mask),
                               per_sequence("reinforce_pp", scores, groups, mask), atol=1e-4, rtol=1e-3)
    # GRPO: scale-free within groups of two or more (up to ε); a singleton (mean 0, std 1) keeps its scaled score
    singleton = torch.tensor([groups.count(g) == 1 for g in groups])
    expected = torch.where(singleton, scale * per_sequence("grpo", scores, groups, mask),
                           per_sequence("grpo", scores, groups, mask))
    torch.testing.assert_close(per_sequence("grpo", scaled, groups, mask), expected, atol=1e-4, rtol=1e-3)


@SETTINGS
@given(grouped_scores(), st.sampled_from(["grpo", "dr_grpo", "rloo", "reinforce_pp"]), st.randoms())
def test_group_advantages_are_permutation_equivariant(data, name, rng):
    scores, groups = data
    order = list(range(len(scores)))
    rng.shuffle(order)
    mask = full_mask(len(scores))
    original = per_sequence(name, scores, groups, mask)
    permuted = per_sequence(name, [scores[i] for i in order], [groups[i] for i in order], mask)
    torch.testing.assert_close(permuted, original[order], atol=1e-5, rtol=1e-5)


@SETTINGS
@given(grouped_scores(), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_advantages_are_zero_outside_the_mask_and_constant_along_a_sequence(data, t, seed):
    scores, groups = data
    mask = make_mask(torch.Generator().manual_seed(seed), len(scores), t)
    for name in GROUP_ALGORITHMS:
        advantages = algorithms.get(name)().advantages(make_batch(scores, groups, mask))
        assert advantages.shape == mask.shape
        assert torch.all(advantages[mask == 0] == 0)
        for i in range(len(scores)):
            row = advantages[i][mask[i] > 0]
            if row.numel():
                assert torch.allclose(row, row[0].expand_as(row))


# ---------------------------------------------------------------------------- hand-derived numbers
def test_grpo_numbers():
    # group [1, 0, 0]: mean 1/3, unbiased var 1/3 → std 1/√3; group [5]: mean 0, std 1; group [2, 2]: std 0
    got = F.group_normalized_advantages(torch.tensor([1.0, 0.0, 0.0, 5.0, 2.0, 2.0]), torch.tensor([0, 0, 0, 1, 2, 2]))
    s = 1 / math.sqrt(3) + 1e-6
    expected = [(2 / 3) / s, (-1 / 3) / s, (-1 / 3) / s, 5.0 / (1 + 1e-6), 0.0, 0.0]
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=1e-6)
    dr = F.group_normalized_advantages(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0, 0, 0]), norm_by_std=False)
    torch.testing.assert_close(dr, torch.tensor([2 / 3, -1 / 3, -1 / 3]))


def test_rloo_numbers():
    got = F.rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.7, 3.0, 1.0]), torch.tensor([0, 0, 0, 1, 2, 2]))
    # 1 − (0+0)/2; 0 − (1+0)/2; singleton keeps 0.7; 3 − 1; 1 − 3
    torch.testing.assert_close(got, torch.tensor([1.0, -0.5, -0.5, 0.7, 2.0, -2.0]))


def test_reinforce_pp_numbers():
    # baselined scores: group 0 [1, 0] → [0.5, −0.5]; group 1 [1, 1] → [0, 0]; one token each.
    # token mean 0, unbiased var (0.25 + 0.25) / 3 = 1/6 → ±0.5·√6
    got = F.reinforce_pp_baseline_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0, 0, 1, 1]),
                                             torch.ones(4, 1))
    torch.testing.assert_close(got[:, 0], torch.tensor([0.5 * math.sqrt(6), -0.5 * math.sqrt(6), 0.0, 0.0]),
                               atol=1e-5, rtol=1e-5)


def test_gae_numbers_and_skipping_masked_positions():
    # mask [0, 1, 0, 1]: position 2 (value 99, a tool token) is skipped; reward 1 on position 3.
    rewards = torch.tensor([[0.0, 0.0, 5.0, 1.0]])
    values = torch.tensor([[7.0, 0.5, 99.0, 0.8]])
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    gamma, lam = 0.9, 0.5
    _, returns = F.gae_advantages_and_returns(rewards, values, mask, gamma, lam)
    # t=3: δ = 1 − 0.8 = 0.2, A = 0.2; t=1: δ = 0.9·0.8 − 0.5 = 0.22, A = 0.22 + 0.45·0.2 = 0.31
    torch.testing.assert_close(returns, torch.tensor([[0.0, 0.31 + 0.5, 0.0, 0.2 + 0.8]]))
    advantages, _ = F.gae_advantages_and_returns(rewards, values, mask, gamma, lam)
    # two tokens whiten to ±1/√2 (unbiased variance), larger first
    torch.testing.assert_close(advantages, torch.tensor([[0.0, 1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)]]),
                               atol=1e-4, rtol=1e-4)


def test_ppo_advantages_and_returns_from_batch():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    values = torch.tensor([[0.0, 0.5, 0.8, 0.0], [0.0, 0.0, 0.1, 0.2]])
    batch = make_batch([1.0, 0.0], [0, 1], mask, values=values)
    ppo = algorithms.get("ppo")()
    advantages, returns = ppo.advantages_and_returns(batch)
    # γ = λ = 1: returns are the outcome reward at every response token
    torch.testing.assert_close(returns, torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    raw = [0.5, 0.2, -0.1, -0.2]  # 1 − 0.5, 1 − 0.8, 0 − 0.1, 0 − 0.2
    expected = slow_whiten(raw)
    torch.testing.assert_close(advantages[mask > 0], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ppo.advantages(batch), advantages)
    with pytest.raises(ValueError, match="values"):
        ppo.advantages_and_returns(make_batch([1.0, 0.0], [0, 1], mask))


def test_gpg_advantages_and_loss_numbers():
    # scores [1, 0, 0 | 1]: α = 4 / 2 non-zero = 2; group means 1/3 and 0 (a group of one)
    mask = torch.ones(4, 2, dtype=torch.float64)
    gpg = algorithms.get("gpg")()
    advantages = gpg.advantages(make_batch([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 1], mask))
    expected = torch.tensor([2 * 2 / 3, 2 * -1 / 3, 2 * -1 / 3, 2.0], dtype=torch.float64)
    torch.testing.assert_close(advantages[:, 0].double(), expected, atol=1e-6, rtol=1e-6)
    log_probs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = gpg.policy_loss(log_probs, log_probs.detach() - 5.0, torch.tensor([[1.0, -3.0]]), torch.ones(1, 2))
    assert float(loss.detach()) == pytest.approx((1.0 * 1 + (-2.0) * 3) / 2)  # −A·log π, no ratio


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_batch_whiten_equals_the_metrics_masked_whiten_in_one_process(b, t, seed):
    from covgym.core.metrics import masked_whiten

    generator = torch.Generator().manual_seed(seed)
    values = 3 * torch.randn(b, t, generator=generator, dtype=torch.float64)
    mask = make_mask(generator, b, t)
    torch.testing.assert_close(F.batch_whiten(values, mask) * mask, masked_whiten(values, mask) * mask)
