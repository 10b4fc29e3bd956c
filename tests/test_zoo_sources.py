"""Each zoo part pinned to a worked example taken from its source (docs/algorithms.md names file and lines)."""

from __future__ import annotations

import math

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.core.batch import RolloutBatch


def outcome_batch(rewards: list[float], entropy: float = 0.5, groups: list[int] | None = None) -> RolloutBatch:
    b = len(rewards)
    mask = torch.ones(b, 1)
    return RolloutBatch(input_ids=torch.zeros(b, 1, dtype=torch.long), attention_mask=torch.ones(b, 1, dtype=torch.long),
                        response_mask=mask, old_log_probs=torch.full((b, 1), -1.0),
                        rewards=torch.tensor(rewards), group_ids=torch.tensor(groups or [0] * b),
                        entropies=torch.full((b, 1), entropy))


# ---------------------------------------------------------------------------------------------- QAE
@pytest.mark.parametrize(("k", "correct", "baseline"), [(0.4, 5, 1.0), (0.5, 4, 0.0), (0.4, 4, 0.0), (0.4, 1, 0.0)])
def test_quantile_baseline_is_the_papers_order_statistic(k, correct, baseline):
    """QAE §3: b_K = inf{x: F̂(x) >= K}. K = 0.4, 5/8 correct: F̂(0) = 3/8 < 0.4, so b = 1 and only failures move."""
    rewards = [1.0] * correct + [0.0] * (8 - correct)
    plain = algorithms.get("quantile_baseline")(baseline_quantile=k, norm_adv_by_std_in_grpo=False)
    advantages = plain.advantages(outcome_batch(rewards))[:, 0]
    assert advantages.tolist() == pytest.approx([r - baseline for r in rewards])


def test_quantile_baseline_defaults_and_the_authors_linear_variant():
    assert algorithms.get("quantile_baseline")().baseline_quantile == 0.4  # the paper's recipe, quantile_k=0.4
    rewards = [1.0] * 5 + [0.0] * 3
    linear = algorithms.get("quantile_baseline")(norm_adv_by_std_in_grpo=False, baseline_quantile_method="linear")
    assert linear.advantages(outcome_batch(rewards))[0, 0].item() == pytest.approx(0.2)  # torch.quantile: b = 0.8
    normed = algorithms.get("quantile_baseline")()  # successes 0, failures −1/(std + ε)
    std = torch.tensor(rewards).std().item()
    assert normed.advantages(outcome_batch(rewards))[:, 0].tolist() == pytest.approx(
        [0.0] * 5 + [-1 / (std + 1e-6)] * 3, rel=1e-5)
    with pytest.raises(ValueError, match="baseline_quantile_method"):
        algorithms.get("quantile_baseline")(baseline_quantile_method="nearest")


# ---------------------------------------------------------------------------------------------- adaptive entropy
def test_adaptive_entropy_follows_skyworks_entcontroller():
    """Skywork-OR1 EntController with the 7b_8k.sh recipe (target 0.2, Δ 1e-4, clamp [0, 0.005], α_0 = 0):
    entropies 0.1, 0.1, 0.3 give coefficients 1e-4, 2e-4, 1e-4 and the bonus is off after the third (0.3 > 0.2)."""
    algorithm = algorithms.get("grpo+adaptive_entropy")()
    control = algorithm.controls[0]
    assert (control.adaptive_entropy_target, control.adaptive_entropy_coeff_step, control.adaptive_entropy_coeff_min,
            control.adaptive_entropy_coeff_max, control.adaptive_entropy_coeff_init) == (0.2, 1e-4, 0.0, 0.005, 0.0)
    applied, kept = [], []
    for entropy in (0.1, 0.1, 0.3):
        applied.append(algorithm.end_of_step({"entropy_mean": entropy})["adaptive_entropy_coeff_next"])
        kept.append(control.coefficient)
    assert kept == pytest.approx([1e-4, 2e-4, 1e-4]) and applied == pytest.approx([1e-4, 2e-4, 0.0])
    log_probs = torch.full((2, 3), -1.0, requires_grad=True)
    entropy = torch.full((2, 3), 0.5, requires_grad=True)
    _, metrics = algorithm.policy_loss(log_probs, log_probs.detach(), torch.zeros(2, 3), torch.ones(2, 3),
                                          entropy=entropy)
    assert metrics["adaptive_entropy_coeff"] == 0.0  # gated off: no bonus term at all
    for _ in range(100):  # a long stretch below the target: the coefficient stops at the clamp
        algorithm.end_of_step({"entropy_mean": 0.0})
    assert control.coefficient == pytest.approx(0.005)


# ---------------------------------------------------------------------------------------------- 80/20 tokens
@pytest.mark.parametrize(("normalization", "scale"), [("response_tokens", 1.0), ("selected_tokens", 10 / 2)])
def test_high_entropy_tokens_normalises_like_trl_or_like_the_authors(normalization, scale):
    """10 tokens, ρ = 0.2: 2 trained. TRL divides their loss by 10 response tokens, the authors' code by the 2."""
    algorithm = algorithms.get("grpo+vanilla_pg+high_entropy_tokens")(high_entropy_normalization=normalization)
    log_probs = torch.full((1, 10), -1.0, requires_grad=True)
    entropy = torch.arange(10.0)[None]
    loss, _ = algorithm.policy_loss(log_probs, log_probs.detach(), torch.ones(1, 10), torch.ones(1, 10),
                                    entropy=entropy)
    loss.backward()
    want = torch.zeros(1, 10)
    want[0, 8:] = -scale / 10
    torch.testing.assert_close(log_probs.grad, want)


# ---------------------------------------------------------------------------------------------- Entrocraft
def test_entrocraft_keeps_positive_samples_above_the_band_negative_below_grpo_inside():
    """lblaoke/entrocraft core_algos.py grpo_range: above U RAFT++ (max(s, 0)), below L NSR (min(s, 0)), else GRPO;
    band annealed by cos from ([0.4, 0.5]) to ([0.1, 0.2]) as its qwen3-14b script."""
    make = algorithms.get("grpo+entrocraft")
    rewards = [1.0, -1.0, 1.0, -1.0]
    grpo = algorithms.get("grpo")().advantages(outcome_batch(rewards))[:, 0]
    for entropy, want in ((0.9, [1.0, 0.0, 1.0, 0.0]), (0.1, [0.0, -1.0, 0.0, -1.0]), (0.45, grpo.tolist())):
        assert make().advantages(outcome_batch(rewards, entropy))[:, 0].tolist() == pytest.approx(want)
    algorithm = make()
    control = algorithm.controls[0]
    assert control.band() == pytest.approx((0.4 - 0.3 * (1 - math.cos(math.pi / 100)) / 2,
                                            0.5 - 0.3 * (1 - math.cos(math.pi / 100)) / 2))  # verl global_steps = 1
    for _ in range(99):
        algorithm.end_of_step({})
    assert control.band() == pytest.approx((0.1, 0.2))
    linear = algorithms.get("grpo+entrocraft")(entrocraft_schedule="linear", entrocraft_steps=4)
    assert linear.controls[0].band() == pytest.approx((0.4 - 0.3 / 4, 0.5 - 0.3 / 4))
    with pytest.raises(ValueError, match="entrocraft_schedule"):
        make(entrocraft_schedule="exp")


def test_gspo_is_a_plain_sequence_policy_gradient_on_policy():
    """On the first mini-batch every sequence ratio is 1: d loss / d log π_t = −A_i / |y_i| / #sequences."""
    algorithm = algorithms.get("grpo+gspo")()
    log_probs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    advantages = torch.tensor([[1.0, 1.0, 0.0], [-2.0, 0.0, 0.0]])
    loss, _ = algorithm.policy_loss(log_probs, log_probs.detach(), advantages, mask)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.25, -0.25, 0.0], [1.0, 0.0, 0.0]]))
