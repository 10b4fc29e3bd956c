"""The methods built on the entropy mechanism (issue 25 item 4), each pinned to a worked example from its source
or, where the source gives none, to one hand-computed from its equations, and to a slow reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.batch import RolloutBatch


def outcome_batch(rewards: list[float], groups: list[int] | None = None, entropy: float = 0.5,
                  log_prob: float = -1.0) -> RolloutBatch:
    b = len(rewards)
    return RolloutBatch(input_ids=torch.zeros(b, 1, dtype=torch.long), attention_mask=torch.ones(b, 1, dtype=torch.long),
                        response_mask=torch.ones(b, 1), old_log_probs=torch.full((b, 1), log_prob),
                        rewards=torch.tensor(rewards), group_ids=torch.tensor(groups or [0] * b),
                        entropies=torch.full((b, 1), entropy))


# ---------------------------------------------------------------------------------------------- pass@k
def passk_by_enumeration(correct: list[bool], k: int) -> list[float]:
    """Slow reference: every k-subset is an attempt rewarded 1 if it holds a correct response; a response's
    advantage is (mean reward of the subsets that contain it − mean over all subsets) / std over all subsets."""
    n = len(correct)
    subsets = list(itertools.combinations(range(n), k))
    reward = {s: float(any(correct[i] for i in s)) for s in subsets}
    mean = sum(reward.values()) / len(subsets)
    std = math.sqrt(sum((r - mean) ** 2 for r in reward.values()) / len(subsets))
    out = []
    for i in range(n):
        mine = [reward[s] for s in subsets if i in s]
        out.append(0.0 if std == 0 else (sum(mine) / len(mine) - mean) / std)
    return out


def test_passk_worked_example_n8_c2_k4():
    """Hand-computed from the paper's §3 equations: R̄ = 1 − C(6,4)/C(8,4) = 11/14, σ = √33/14,
    A_pos = (3/14)/σ = 3/√33 = 0.5222, A_neg = (3/14 − C(5,3)/C(7,3))/σ = −1/√33 = −0.1741."""
    rewards = [1.0, 1.0] + [0.0] * 6
    advantages = algorithms.get("passk")(passk_k=4, epsilon=0.0).advantages(outcome_batch(rewards))[:, 0]
    assert advantages.tolist() == pytest.approx([3 / math.sqrt(33)] * 2 + [-1 / math.sqrt(33)] * 6, rel=1e-6)
    assert float(advantages.sum()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("n", "k"), [(4, 2), (6, 3), (8, 4), (5, 5), (7, 1)])
def test_passk_equals_subset_enumeration(n, k):
    make = algorithms.get("passk")(passk_k=k, epsilon=0.0)
    for c in range(n + 1):
        correct = [i < c for i in range(n)]
        got = make.advantages(outcome_batch([float(x) for x in correct]))[:, 0].tolist()
        assert got == pytest.approx(passk_by_enumeration(correct, k), abs=1e-6), (n, k, c)


def test_passk_k1_is_grpo_with_population_std_and_groups_are_separate():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    groups = [0, 0, 0, 0, 1, 1, 1]
    got = algorithms.get("passk")(passk_k=1, epsilon=0.0).advantages(outcome_batch(rewards, groups))[:, 0]
    expected = []
    for g in (0, 1):
        values = torch.tensor([r for r, h in zip(rewards, groups) if h == g])
        expected += ((values - values.mean()) / values.std(unbiased=False)).tolist()
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_passk_threshold_short_groups_and_errors():
    make = algorithms.get("passk")
    # ±1 rewards: +1 is correct; a group of 3 with k = 4 is scored as pass@3 (one subset): no signal
    assert make(passk_k=4).advantages(outcome_batch([1.0, -1.0, -1.0]))[:, 0].tolist() == [0.0, 0.0, 0.0]
    # threshold 0.5: 0.6 is correct; pass@1 of [0.6, 0.4] is ±1, pass@2 has one subset (it passes): no signal
    assert make(passk_k=1, passk_success_threshold=0.5, epsilon=0.0).advantages(
        outcome_batch([0.6, 0.4]))[:, 0].tolist() == pytest.approx([1.0, -1.0])
    assert make(passk_k=2, passk_success_threshold=0.5).advantages(outcome_batch([0.6, 0.4]))[:, 0].tolist() == [
        0.0, 0.0]
    for bad in (0, 2.5, -1):
        with pytest.raises(ValueError, match="passk_k"):
            make(passk_k=bad)
