"""The methods built on the entropy mechanism (issue 25 item 4), each pinned to a worked example from its source
or, where the source gives none, to one hand-computed from its equations, and to a slow reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.core.batch import RolloutBatch


def outcome_batch(rewards: list[float], groups: list[int] | None = None, entropy: float | list[float] = 0.5,
                  log_prob: float | list[float] = -1.0) -> RolloutBatch:
    """One-token responses; ``entropy`` and ``log_prob`` per response (a list) or shared (a float)."""
    b = len(rewards)

    def column(value: float | list[float]) -> torch.Tensor:
        return torch.tensor(value if isinstance(value, list) else [value] * b, dtype=torch.float32)[:, None]

    return RolloutBatch(input_ids=torch.zeros(b, 1, dtype=torch.long), attention_mask=torch.ones(b, 1, dtype=torch.long),
                        response_mask=torch.ones(b, 1), old_log_probs=column(log_prob),
                        rewards=torch.tensor(rewards), group_ids=torch.tensor(groups or [0] * b),
                        entropies=column(entropy))


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


# ---------------------------------------------------------------------------------------------- OPEFO
OPEFO_PROBS = [0.9, 0.8, 0.9, 0.05]


def test_opefo_worked_example_scales_the_dominant_outflow():
    """Hand-computed. Rewards [1, 1, 0, 0] in one group: GRPO A = ±√3/2. With π = [0.9, 0.8, 0.9, 0.05] and H = 0.5,
    s_t = −A·π·(log π + H) = [−0.3076, −0.1918, +0.3076, −0.1081]: inflow 0.3076 (penalising a confident token),
    outflow 0.6075, so the three entropy-decreasing tokens are scaled by c = 0.3076/0.6075 = 0.5063."""
    batch = outcome_batch([1.0, 1.0, 0.0, 0.0], entropy=0.5, log_prob=[math.log(p) for p in OPEFO_PROBS])
    a = math.sqrt(3) / 2
    algo = algorithms.get("grpo+opefo")(opefo_min_scale=0.0)
    got = algo.advantages(batch)[:, 0].tolist()
    c = 0.506346708564774
    assert got == pytest.approx([a * c, a * c, -a, -a * c], rel=1e-5)
    metrics = algo.end_of_step({})
    assert metrics["opefo_inflow"] == pytest.approx(0.3075910, rel=1e-5)
    assert metrics["opefo_outflow"] == pytest.approx(0.6074712, rel=1e-5)
    assert metrics["opefo_scale"] == pytest.approx(c, rel=1e-6) and metrics["opefo_branch"] == -1.0


def test_opefo_balances_the_first_order_change_and_its_knobs():
    batch = outcome_batch([1.0, 1.0, 0.0, 0.0], entropy=0.5, log_prob=[math.log(p) for p in OPEFO_PROBS])
    from covgym.algorithms.first_order import unit_step_entropy_change

    balanced = algorithms.get("grpo+opefo")(opefo_min_scale=0.0).advantages(batch)
    assert float(unit_step_entropy_change(batch, balanced).sum()) == pytest.approx(0.0, abs=1e-6)
    plain = algorithms.get("grpo")().advantages(batch)
    assert torch.equal(algorithms.get("grpo+opefo")(opefo_strength=0.0).advantages(batch), plain)
    floored = algorithms.get("grpo+opefo")(opefo_min_scale=0.8).advantages(batch)[:, 0]
    assert floored.tolist() == pytest.approx((plain[:, 0] * torch.tensor([0.8, 0.8, 1.0, 0.8])).tolist(), rel=1e-6)
    for bad in ({"opefo_strength": 1.5}, {"opefo_min_scale": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            algorithms.get("grpo+opefo")(**bad)


# ---------------------------------------------------------------------------------------------- covariance kernel
def test_covariance_kernel_worked_example():
    """Hand-computed. log π = [−0.5, −1, −2, −0.5], A = [1, 1, −1, −1]: c = (A − 0)·(log π + 1) = [0.5, 0, 1, −0.5],
    c̄ = 0.25, σ² = (0.25² + 0.25² + 0.75² + 0.75²)/4 = 0.3125, w = exp(−(c − c̄)²/0.625) =
    [e^−0.1, e^−0.1, e^−0.9, e^−0.9] = [0.9048, 0.9048, 0.4057, 0.4057]."""
    algo = algorithms.get("grpo+covariance_kernel")()
    log_probs = torch.tensor([[-0.5, -1.0, -2.0, -0.5]], dtype=torch.float64)
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    weights, metrics = algo.token_weights(log_probs, advantages, mask, None)
    expected = [math.exp(-0.1), math.exp(-0.1), math.exp(-0.9), math.exp(-0.9)]
    assert weights[0].tolist() == pytest.approx(expected, rel=1e-12)
    assert metrics["covariance_kernel_weight_min"] == pytest.approx(math.exp(-0.9))
    # on-policy, the loss is the token-mean of −w·A (PPO-clip at ratio 1)
    loss, _ = algo.policy_loss(log_probs, log_probs.clone(), advantages, mask)
    assert float(loss) == pytest.approx(-sum(w * a for w, a in zip(expected, [1, 1, -1, -1])) / 4, rel=1e-9)


def test_covariance_kernel_equals_a_loop_reference_over_the_masked_tokens():
    generator = torch.Generator().manual_seed(3)
    log_probs = -3 * torch.rand(3, 5, generator=generator, dtype=torch.float64)
    advantages = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.float64)
    weights, _ = algorithms.get("grpo+covariance_kernel")().token_weights(log_probs, advantages, mask, None)
    cells = [(i, j) for i in range(3) for j in range(5) if mask[i, j] > 0]
    mean_a = sum(float(advantages[c]) for c in cells) / len(cells)
    mean_l = sum(float(log_probs[c]) for c in cells) / len(cells)
    cov = {c: (float(advantages[c]) - mean_a) * (float(log_probs[c]) - mean_l) for c in cells}
    centre = sum(cov.values()) / len(cells)
    variance = sum((v - centre) ** 2 for v in cov.values()) / len(cells)
    for c in cells:
        assert float(weights[c]) == pytest.approx(math.exp(-((cov[c] - centre) ** 2) / (2 * variance)), rel=1e-9)
    uniform, _ = algorithms.get("grpo+covariance_kernel")().token_weights(
        log_probs, torch.ones(3, 5, dtype=torch.float64), mask, None)  # equal advantages: every c = 0, σ = 0
    assert torch.equal(uniform, torch.ones(3, 5, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- HTPO
def token_batch(rewards: list[float], groups: list[int], entropies: list[list[float]]) -> RolloutBatch:
    """Responses of len(entropies[i]) tokens after a one-token prompt, right-padded."""
    b, t = len(rewards), 1 + max(len(e) for e in entropies)
    mask, ent = torch.zeros(b, t), torch.zeros(b, t)
    for i, row in enumerate(entropies):
        mask[i, 1:1 + len(row)] = 1.0
        ent[i, 1:1 + len(row)] = torch.tensor(row)
    return RolloutBatch(input_ids=torch.zeros(b, t, dtype=torch.long), attention_mask=torch.ones(b, t, dtype=torch.long),
                        response_mask=mask, old_log_probs=-mask, rewards=torch.tensor(rewards),
                        group_ids=torch.tensor(groups), entropies=ent)


def test_htpo_worked_example_from_the_source_rule():
    """xcyao00/HTPO core_algos.py: group 0 has 1/4 correct (hard, < 0.6), group 1 3/4 (easy).
    Hard × correct, entropies [0.1, 0.2, 0.3, 0.4, 2.0]: high = the top max(int(0.2·5), 1) = 1 token (2.0); with
    clip_entropy_ratio1 = 0.5, k = int(0.5·4) = 2 and the tokens strictly below the 2nd smallest (0.2) are dropped:
    only 0.1. At the source's 0.006, k = 1 and nothing is dropped (strict <). Easy × correct, ten tokens with 2.0 and
    1.5 the top two: k = max(int(0.02·2), 1) = 1, the 2.0 token is dropped. Incorrect responses keep every token."""
    hard = [0.1, 0.2, 0.3, 0.4, 2.0]
    easy = [0.1, 0.2, 0.3, 0.4, 2.0, 1.5, 0.5, 0.6, 0.7, 0.8]
    batch = token_batch([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0], [0, 0, 0, 0, 1, 1, 1, 1],
                        [hard, hard, hard, hard, easy, easy, easy, easy])
    plain = algorithms.get("grpo")().advantages(batch)
    got = algorithms.get("grpo+htpo")(clip_entropy_ratio1=0.5).advantages(batch)
    dropped = (plain != 0) & (got == 0)
    expected = torch.zeros_like(dropped)
    expected[0, 1] = True  # hard × correct: entropy 0.1
    for i in (4, 5, 6):
        expected[i, 5] = True  # easy × correct: entropy 2.0
    assert torch.equal(dropped, expected)
    assert torch.equal(got[~dropped], plain[~dropped])
    source_default = algorithms.get("grpo+htpo")()
    assert torch.equal(source_default.advantages(batch)[:4], plain[:4])  # k = 1 with strict <: nothing dropped
    assert source_default.end_of_step({})["htpo_hard_frac"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="clip_entropy_ratio2"):
        algorithms.get("grpo+htpo")(clip_entropy_ratio2=0.0)
