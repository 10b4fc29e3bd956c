"""The newer parts: GSPO, CISPO, quantile baseline, high-entropy tokens, adaptive entropy, and covgym's
polarity-aware, entropy-schedule and entropy-target controls (masking, padding, their own properties, and their
effect on entropy on exact tabular softmax policies)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import covgym.algorithms as algorithms
from covgym.algorithms import functional as F
from covgym.core.batch import RolloutBatch
from covgym.measure import theory
from covgym.testing import check_algorithm

SETTINGS = settings(deadline=None, max_examples=30)
SEEDS = st.integers(0, 2**31 - 1)

#: each new part inside a composition, with hyperparameters that make it act
NEW_PARTS = {
    "gspo": {"clip_ratio_low": 0.05, "clip_ratio_high": 0.08},
    "cispo": {},
    "quantile_baseline": {"baseline_quantile": 0.3},
    "grpo+high_entropy_tokens": {"top_entropy_quantile": 0.4},
    "grpo+adaptive_entropy": {"adaptive_entropy_coeff_init": 0.004},
    "grpo+polarity_aware": {"polarity_phase": 0.7},
    "rloo+entropy_schedule": {"entropy_schedule_start": 3.0},
    "grpo+entropy_target": {"entropy_target_value": 0.1},
}


def random_loss_inputs(seed: int, b: int, t: int, move: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    return {"log_probs": (old + move * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_(True),
            "old_log_probs": old, "advantages": torch.randn(b, t, generator=g, dtype=torch.float64),
            "response_mask": (torch.rand(b, t, generator=g) < 0.7).double(),
            "entropy": (2 * torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_(True)}


def random_batch(seed: int, groups: int, size: int, t: int, pad: int = 0) -> RolloutBatch:
    """A rollout batch of ``groups`` groups; ``pad`` extra columns of padding (mask 0, arbitrary values)."""
    g = torch.Generator().manual_seed(seed)
    b = groups * size
    mask = (torch.rand(b, t, generator=g) < 0.8).float()
    mask[:, 0] = 1.0
    old_log_probs = -2 * torch.rand(b, t, generator=g) * mask
    rewards = torch.randint(0, 3, (b,), generator=g).float()
    entropies = 2 * torch.rand(b, t, generator=g) * mask
    garbage = torch.randn(b, pad, generator=g) * 50  # drawn last: the real positions do not depend on pad
    return RolloutBatch(
        input_ids=torch.zeros(b, t + pad, dtype=torch.long), attention_mask=torch.ones(b, t + pad, dtype=torch.long),
        response_mask=torch.cat([mask, torch.zeros(b, pad)], 1),
        old_log_probs=torch.cat([old_log_probs, garbage], 1), rewards=rewards, group_ids=torch.arange(b) // size,
        entropies=torch.cat([entropies, garbage.abs()], 1))


# ---------------------------------------------------------------------------------------------- masking and padding
@pytest.mark.parametrize("name", sorted(NEW_PARTS))
def test_new_parts_pass_the_algorithm_property_suite(name):
    """Masked positions get zero gradient, padding changes nothing, finiteness, advantages masked, entropy law."""
    passed = check_algorithm(algorithms.get(name)(**NEW_PARTS[name]), max_examples=15, seed=1)
    assert {"masked_gradient", "padding", "extreme_inputs", "advantages_masked", "entropy_law"} <= set(passed)


@SETTINGS
@given(st.sampled_from(sorted(NEW_PARTS)), SEEDS, st.integers(1, 3), st.integers(2, 4), st.integers(1, 5),
       st.integers(1, 4))
def test_padding_columns_change_no_advantage(name, seed, groups, size, t, pad):
    plain = algorithms.get(name)(**NEW_PARTS[name]).advantages(random_batch(seed, groups, size, t))
    padded = algorithms.get(name)(**NEW_PARTS[name]).advantages(random_batch(seed, groups, size, t, pad))
    torch.testing.assert_close(padded[:, :t], plain)
    assert torch.all(padded[:, t:] == 0)


# ---------------------------------------------------------------------------------------------- GSPO and CISPO
def slow_gspo(log_probs, old, advantages, mask, low, high):
    """GSPO written per sequence: s_i = exp(mean log-ratio), token ratio sg[s_i]·π/sg[π], PPO-clip, seq-mean-token-mean."""
    per_sequence = []
    for i in range(log_probs.shape[0]):
        tokens = [j for j in range(log_probs.shape[1]) if mask[i, j] > 0]
        if not tokens:
            continue
        mean_log_ratio = sum(float(log_probs[i, j].detach() - old[i, j]) for j in tokens) / len(tokens)
        losses = []
        for j in tokens:
            ratio = torch.exp(log_probs[i, j] - log_probs[i, j].detach() + min(mean_log_ratio, 10.0))
            a = advantages[i, j]
            losses.append(torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - low, 1 + high)))
        per_sequence.append(sum(losses) / len(tokens))
    return sum(per_sequence) / max(len(per_sequence), 1)


def slow_cispo(log_probs, old, advantages, mask, low, high):
    total, count = 0.0, 0
    for i in range(log_probs.shape[0]):
        for j in range(log_probs.shape[1]):
            if mask[i, j] > 0:
                weight = min(max(math.exp(float(log_probs[i, j] - old[i, j])), 1 - low), 1 + high)
                total = total - weight * advantages[i, j] * log_probs[i, j]
                count += 1
    return total / max(count, 1)


@SETTINGS
@given(SEEDS, st.integers(1, 4), st.integers(1, 6), st.floats(0.0, 0.3), st.floats(0.0, 0.3))
def test_gspo_and_cispo_match_slow_references(seed, b, t, low, high):
    inputs = random_loss_inputs(seed, b, t)
    args = (inputs["log_probs"], inputs["old_log_probs"], inputs["advantages"], inputs["response_mask"])
    for name, slow in (("gspo", slow_gspo), ("cispo", slow_cispo)):
        leaf = inputs["log_probs"].detach().clone().requires_grad_(True)
        loss, _ = algorithms.get(name)(clip_ratio_low=low, clip_ratio_high=high).policy_loss(leaf, *args[1:])
        loss.backward()
        ref_leaf = inputs["log_probs"].detach().clone().requires_grad_(True)
        reference = slow(ref_leaf, *args[1:], low, high)
        if isinstance(reference, torch.Tensor) and reference.requires_grad:
            reference.backward()
            torch.testing.assert_close(leaf.grad, ref_leaf.grad * inputs["response_mask"])
        torch.testing.assert_close(loss.detach(), torch.as_tensor(reference, dtype=torch.float64).detach())


def test_gspo_and_cispo_defaults_and_on_policy_gradient():
    gspo, cispo = algorithms.get("gspo")(), algorithms.get("cispo")()
    assert (gspo.clip_ratio_low, gspo.clip_ratio_high, gspo.loss_agg_mode) == (3e-4, 4e-4, "seq-mean-token-mean")
    assert (cispo.clip_ratio_low, cispo.clip_ratio_high, cispo.loss_agg_mode) == (1.0, 0.28, "token-mean")
    inputs = random_loss_inputs(3, 3, 5, move=0.0)  # on policy: both are the plain policy gradient
    for algorithm, mode in ((gspo, "seq-mean-token-mean"), (cispo, "token-mean")):
        leaf = inputs["old_log_probs"].clone().requires_grad_(True)
        algorithm.policy_loss(leaf, inputs["old_log_probs"], inputs["advantages"], inputs["response_mask"])[0].backward()
        plain = inputs["old_log_probs"].clone().requires_grad_(True)
        F.aggregate_loss(-inputs["advantages"] * plain, inputs["response_mask"], mode).backward()
        torch.testing.assert_close(leaf.grad, plain.grad)


HAS_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(not HAS_VERL, reason="verl is not installed (optional; `make verl-check` runs this)")


@needs_verl
@settings(deadline=None, max_examples=25)
@given(st.sampled_from(["gspo", "cispo"]), SEEDS, st.integers(1, 5), st.integers(1, 8), st.floats(0.0, 0.3),
       st.floats(0.0, 0.3), st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]))
def test_gspo_and_cispo_equal_verl(name, seed, b, t, low, high, mode):
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig

    inputs = random_loss_inputs(seed, b, t)
    mask = inputs["response_mask"]
    assume(bool((mask.sum(-1) > 0).all()))  # verl's seq-mean modes and ours agree on empty rows only up to 1e-8
    config = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2,
                         clip_ratio_low=low, clip_ratio_high=high, loss_agg_mode=mode)
    function = {"gspo": core_algos.compute_policy_loss_gspo, "cispo": core_algos.compute_policy_loss_cispo}[name]
    theirs_leaf = inputs["log_probs"].detach().clone().requires_grad_(True)
    theirs, metrics = function(old_log_prob=inputs["old_log_probs"], log_prob=theirs_leaf,
                               advantages=inputs["advantages"], response_mask=mask, loss_agg_mode=mode, config=config)
    theirs.backward()
    ours_leaf = inputs["log_probs"].detach().clone().requires_grad_(True)
    ours, our_metrics = algorithms.get(name)(clip_ratio_low=low, clip_ratio_high=high, loss_agg_mode=mode).policy_loss(
        ours_leaf, inputs["old_log_probs"], inputs["advantages"], mask)
    ours.backward()
    torch.testing.assert_close(ours.detach(), theirs.detach())
    torch.testing.assert_close(ours_leaf.grad, theirs_leaf.grad)
    assert our_metrics["clip_frac"] == pytest.approx(metrics["actor/pg_clipfrac"])
    assert our_metrics["approx_kl"] == pytest.approx(metrics["actor/ppo_kl"])


# ---------------------------------------------------------------------------------------------- quantile baseline
@SETTINGS
@given(SEEDS, st.integers(1, 4), st.integers(2, 7), st.floats(0.0, 1.0), st.floats(-5.0, 5.0))
def test_quantile_baseline_is_the_group_quantile_and_ignores_a_shift(seed, groups, size, k, shift):
    batch = random_batch(seed, groups, size, 3)
    batch = batch.replace(rewards=torch.randn(batch.batch_size, generator=torch.Generator().manual_seed(seed)))
    rewards = batch.rewards.double().numpy()
    for method in ("inverse_cdf", "linear"):
        plain = algorithms.get("quantile_baseline")(baseline_quantile=k, norm_adv_by_std_in_grpo=False,
                                                    baseline_quantile_method=method)
        per_sequence = plain.advantages(batch)[:, 0].double()
        for g in range(groups):
            rows = batch.group_ids.numpy() == g
            values = rewards[rows]
            if method == "linear":
                baseline = np.quantile(values, k)
            else:  # slow reference: the smallest x with F̂(x) = #{v <= x}/n >= k
                baseline = min(x for x in values if np.mean(values <= x) >= k - 1e-9)
            np.testing.assert_allclose(per_sequence.numpy()[rows], values - baseline, rtol=1e-5, atol=1e-5)
    if k == 0.5 or seed % 2:
        median = algorithms.get("quantile_baseline")(baseline_quantile=0.5, norm_adv_by_std_in_grpo=False,
                                                     baseline_quantile_method="linear")
        for g in range(groups):
            rows = batch.group_ids == g
            got = median.advantages(batch)[rows, 0].double()
            np.testing.assert_allclose(got.numpy(), rewards[rows.numpy()] - np.median(rewards[rows.numpy()]),
                                       rtol=1e-5, atol=1e-5)
    normed = algorithms.get("quantile_baseline")(baseline_quantile=k)
    shifted = batch.replace(rewards=batch.rewards + shift * (batch.group_ids == 0).float())
    torch.testing.assert_close(normed.advantages(shifted), normed.advantages(batch), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- high-entropy tokens
@SETTINGS
@given(SEEDS, st.integers(1, 5), st.integers(1, 8), st.floats(0.01, 1.0))
def test_high_entropy_tokens_trains_exactly_the_top_ceil_rho_n_tokens(seed, b, t, rho):
    inputs = random_loss_inputs(seed, b, t, move=0.0)  # ratio 1: every kept token has gradient −A/N ≠ 0
    mask = inputs["response_mask"]
    n = int(mask.sum())
    assume(n > 0)
    algorithm = algorithms.get("grpo+high_entropy_tokens")(top_entropy_quantile=rho)
    loss, metrics = algorithm.policy_loss(inputs["log_probs"], inputs["old_log_probs"], inputs["advantages"], mask,
                                          entropy=inputs["entropy"])
    loss.backward()
    trained = {(i, j) for i, j in zip(*torch.nonzero(inputs["log_probs"].grad, as_tuple=True))}
    ranked = sorted(((float(inputs["entropy"][i, j]), (i, j)) for i in range(b) for j in range(t) if mask[i, j] > 0),
                    reverse=True)
    want = {position for _, position in ranked[:math.ceil(rho * n - 1e-9)]}
    assert {(int(i), int(j)) for i, j in trained} == want
    assert metrics["high_entropy_tokens_frac"] == pytest.approx(len(want) / n)
    with pytest.raises(ValueError, match="entropy"):
        algorithm.policy_loss(inputs["log_probs"], inputs["old_log_probs"], inputs["advantages"], mask)


# ---------------------------------------------------------------------------------------------- adaptive entropy
@SETTINGS
@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=30), st.floats(0.0, 2.0), st.floats(0.0, 0.02),
       st.floats(0.0, 0.05), st.floats(0.0, 0.1))
def test_adaptive_entropy_coefficient_moves_toward_the_target_within_its_clamp(entropies, target, start, step, width):
    algorithm = algorithms.get("grpo+adaptive_entropy")(
        adaptive_entropy_target=target, adaptive_entropy_coeff_init=start, adaptive_entropy_coeff_step=step,
        adaptive_entropy_coeff_min=start / 2, adaptive_entropy_coeff_max=start + width)
    control = algorithm.controls[0]
    for entropy in entropies:
        before = control.coefficient
        after = algorithm.end_of_step({"entropy_mean": entropy})["adaptive_entropy_coeff_next"]
        assert start / 2 <= control.coefficient <= start + width
        if entropy < target:  # below target: the bonus grows (up to its clamp) and is applied
            assert control.coefficient == pytest.approx(min(before + step, start + width)) and after == control.coefficient
        else:  # at or above target: it shrinks, and the gate turns the bonus off (Skywork-OR1's EntController)
            assert control.coefficient == pytest.approx(max(before - step, start / 2)) and after == 0.0
        inputs = random_loss_inputs(1, 2, 3)
        _, metrics = algorithm.policy_loss(**inputs)
        assert metrics["adaptive_entropy_coeff"] == after


# ---------------------------------------------------------------------------------------------- tabular policies
def tabular_entropy(name: str, params: dict, rewards: torch.Tensor, steps: int, lr: float = 1.0, group_size: int = 16,
                    seed: int = 0) -> list[float]:
    """Mean entropy over states after each step of the algorithm on an exact tabular softmax policy."""
    logits = torch.zeros_like(rewards)
    algorithm = algorithms.get(name)(**params)
    generator = torch.Generator().manual_seed(seed)
    entropy = [float(theory.entropy(logits).mean())]
    for _ in range(steps):
        logits, _ = theory.algorithm_update(logits, rewards, algorithm, lr, group_size, 4, generator)
        algorithm.end_of_step({"entropy_mean": entropy[-1]})
        entropy.append(float(theory.entropy(logits).mean()))
    return entropy


def graded_rewards(states: int = 6, actions: int = 6) -> torch.Tensor:
    """One best action per state: policy gradient collapses entropy toward it."""
    g = torch.Generator().manual_seed(7)
    ladder = torch.linspace(1, 0, actions, dtype=torch.float64)
    return torch.stack([ladder[torch.randperm(actions, generator=g)] for _ in range(states)])


def several_correct(states: int = 8, actions: int = 8) -> torch.Tensor:
    """0/1 rewards with several correct actions: entropy falls and settles, with room either way."""
    g = torch.Generator().manual_seed(123)
    rewards = (torch.rand(states, actions, generator=g) < 0.4).double()
    rewards[:, 0] = 1.0
    return rewards


def test_entropy_target_holds_a_constant_target_where_policy_gradient_collapses():
    rewards = graded_rewards()
    base = tabular_entropy("grpo", {}, rewards, 150)
    assert base[-1] < 0.1  # plain policy gradient collapses entropy (log 6 = 1.79 at the start)
    for target in (1.0, 0.6):
        held = tabular_entropy("grpo+entropy_target", {"entropy_target_value": target}, rewards, 150)
        assert max(abs(h - target) for h in held[40:]) < 0.05, (target, held[40::10])


def test_polarity_aware_moves_entropy_the_way_its_phase_asks():
    rewards = several_correct()
    base = tabular_entropy("grpo", {}, rewards, 100)[-1]
    up = tabular_entropy("grpo+polarity_aware", {"polarity_phase": 1.0}, rewards, 100)[-1]
    down = tabular_entropy("grpo+polarity_aware", {"polarity_phase": -1.0}, rewards, 100)[-1]
    online = tabular_entropy("grpo+polarity_aware", {}, rewards, 100)[-1]  # entropy fell: the phase turns up
    assert down + 0.1 < base < up - 0.1 and online > base + 0.1, (down, base, up, online)


def test_entropy_schedule_moves_entropy_the_way_its_schedule_asks():
    rewards = several_correct()
    base = tabular_entropy("grpo", {}, rewards, 100)[-1]
    high = tabular_entropy("grpo+entropy_schedule", {"entropy_schedule_start": 1.5}, rewards, 100)
    low = tabular_entropy("grpo+entropy_schedule", {"entropy_schedule_start": 0.3}, rewards, 100)
    assert low[-1] + 0.1 < base < high[-1] - 0.1, (low[-1], base, high[-1])
    annealed = tabular_entropy("grpo+entropy_schedule", {"entropy_schedule_start": 1.5, "entropy_schedule_end": 0.5,
                                                         "entropy_schedule_steps": 60}, graded_rewards(), 100)
    assert annealed[30] > annealed[60] > 0.35 and abs(annealed[-1] - 0.5) < 0.15, annealed[::10]
