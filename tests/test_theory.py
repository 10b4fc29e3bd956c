"""The entropy mechanism on exact tabular softmax policies (Cui et al. 2025, section 3).

References here are written independently of the library: numpy loops for entropy and covariance, autograd
for gradients, hand-derived group advantages.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import covgym.algorithms as algorithms
from covgym.core.metrics import predicted_entropy_change
from covgym.measure import theory

SETTINGS = settings(deadline=None, max_examples=60)


def softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def entropy_np(z: np.ndarray) -> float:
    p = softmax_np(z)
    return float(-sum(pi * math.log(pi) for pi in p if pi > 0))


def covariance_np(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Cov_{a∼p}(x, y) by the definition E[xy] − E[x]E[y], as a plain loop."""
    exy = sum(p[a] * x[a] * y[a] for a in range(len(p)))
    ex = sum(p[a] * x[a] for a in range(len(p)))
    ey = sum(p[a] * y[a] for a in range(len(p)))
    return float(exy - ex * ey)


@st.composite
def logit_vectors(draw, min_size: int = 2, max_size: int = 12):
    size = draw(st.integers(min_size, max_size))
    values = draw(st.lists(st.floats(-3.0, 3.0), min_size=size, max_size=size))
    return np.asarray(values, dtype=np.float64)


@st.composite
def logits_and_direction(draw):
    z = draw(logit_vectors())
    d = draw(st.lists(st.floats(-1.0, 1.0), min_size=len(z), max_size=len(z)))
    return z, np.asarray(d, dtype=np.float64)


def signed_first_order_error(z: np.ndarray, delta: np.ndarray) -> float:
    """exact ΔH − (−Cov_π(log π, Δz)) with both sides computed by the numpy reference."""
    p = softmax_np(z)
    predicted = -covariance_np(p, np.log(p), delta)
    return entropy_np(z + delta) - entropy_np(z) - predicted


def first_order_error(z: np.ndarray, delta: np.ndarray) -> float:
    return abs(signed_first_order_error(z, delta))


@SETTINGS
@given(logits_and_direction())
def test_first_order_law_error_shrinks_quadratically(case):
    z, direction = case
    # The library's prediction equals the numpy covariance reference.
    p = softmax_np(z)
    library = float(predicted_entropy_change(torch.tensor(z), torch.tensor(1e-2 * direction)))
    assert library == pytest.approx(-covariance_np(p, np.log(p), 1e-2 * direction), abs=1e-12)
    step = 1e-2
    error, error_half = first_order_error(z, step * direction), first_order_error(z, step / 2 * direction)
    assume(error > 1e-11)  # a vanishing second-order term leaves nothing to measure above rounding
    # Richardson split of the signed error e(h) = a·h² + b·h³: the ratio is ~4 only where a·h² dominates b·h³.
    signed, signed_half = (signed_first_order_error(z, h * direction) for h in (step, step / 2))
    a, b = (8 * signed_half - signed) / step**2, (2 * signed - 8 * signed_half) / step**3
    assume(abs(b) * step < 0.1 * abs(a))
    assert 3.2 < error / error_half < 4.8  # halving the step cuts the error ~4x: O(‖Δz‖²)


@st.composite
def bandits(draw):
    z = draw(logit_vectors())
    rewards = draw(st.lists(st.floats(0.0, 1.0), min_size=len(z), max_size=len(z)))
    return z, np.asarray(rewards, dtype=np.float64)


def exact_advantage(z: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    p = softmax_np(z)
    return rewards - float((p * rewards).sum())


@SETTINGS
@given(bandits())
def test_vanilla_pg_step_is_the_expected_gradient_and_changes_entropy_by_cov_log_pi_pi_a(case):
    z, rewards = case
    logits = torch.tensor(z, requires_grad=True)
    (torch.softmax(logits, -1) * torch.tensor(rewards)).sum().backward()
    lr = 1.0
    delta = theory.vanilla_pg_delta(torch.tensor(z), torch.tensor(rewards), lr).numpy()
    np.testing.assert_allclose(delta, logits.grad.numpy(), atol=1e-12)  # Δz = η·∇_z E_π[r]

    p, advantage = softmax_np(z), exact_advantage(z, rewards)
    covariance = covariance_np(p, np.log(p), p * advantage)
    assume(abs(covariance) > 1e-4)
    lr = 1e-3 * abs(covariance) / (1.0 + float((p * advantage) @ (p * advantage)))
    delta = theory.vanilla_pg_delta(torch.tensor(z), torch.tensor(rewards), lr).numpy()
    actual = entropy_np(z + delta) - entropy_np(z)
    assert actual == pytest.approx(-lr * covariance, rel=2e-2)
    assert np.sign(actual) == -np.sign(covariance)  # positive covariance: entropy falls


@SETTINGS
@given(bandits())
def test_natural_pg_changes_entropy_by_cov_log_pi_a(case):
    z, rewards = case
    p, advantage = softmax_np(z), exact_advantage(z, rewards)
    covariance = covariance_np(p, np.log(p), advantage)
    assume(abs(covariance) > 1e-4)
    lr = 1e-3 * abs(covariance) / (1.0 + float(advantage @ advantage))
    delta = theory.natural_pg_delta(torch.tensor(z), torch.tensor(rewards), lr).numpy()
    np.testing.assert_allclose(delta, lr * advantage, atol=1e-14)
    actual = entropy_np(z + delta) - entropy_np(z)
    assert actual == pytest.approx(-lr * covariance, rel=2e-2)
    assert np.sign(actual) == -np.sign(covariance)


@SETTINGS
@given(bandits(), st.sampled_from(["vanilla_pg", "natural_pg"]))
def test_entropy_falls_with_positive_and_rises_with_negative_covariance(case, method):
    z, rewards = case
    p, advantage = softmax_np(z), exact_advantage(z, rewards)
    covariance = covariance_np(p, np.log(p), p * advantage if method == "vanilla_pg" else advantage)
    assume(abs(covariance) > 1e-3)
    trajectory = theory.train_bandit(rewards, method, steps=1, lr=1e-4, init_logits=z)
    change = trajectory.entropy[1] - trajectory.entropy[0]
    assert (change < 0) == (covariance > 0)
    assert trajectory.actual_change[0] == pytest.approx(change, abs=1e-12)


@SETTINGS
@given(logit_vectors(), st.data(), st.floats(-2.0, 2.0).filter(lambda a: abs(a) > 1e-2))
def test_polarity_formula_matches_exact_single_token_change(z, data, advantage):
    from covgym.measure.entropy_dynamics import polarity, polarity_score

    action = data.draw(st.integers(0, len(z) - 1))
    p = softmax_np(z)
    h = entropy_np(z)
    # The docs/entropy.md polarity formula, written out by hand.
    bracket = p[action] * (math.log(p[action]) + h) - sum(q * q * (math.log(q) + h) for q in p)
    formula = -advantage * bracket
    log_pa = torch.tensor([math.log(p[action])], dtype=torch.float64)
    score = float(polarity_score(log_pa, torch.tensor(z)[None], torch.tensor([advantage], dtype=torch.float64)))
    assert score == pytest.approx(formula, abs=1e-12)
    assume(abs(formula) > 1e-4)
    # The formula is the first-order term. A one-sided difference also carries the second-order term
    # (≈ lr²·A², which outweighs lr·formula near the uniform distribution, where the formula is small);
    # the central difference cancels it and leaves an O(lr³) error.
    lr = 1e-4
    delta = theory.single_token_delta(torch.tensor(z), action, advantage, lr).numpy()
    central = (entropy_np(z + delta) - entropy_np(z - delta)) / 2
    assert central == pytest.approx(lr * formula, rel=1e-2)
    # The sign of a real (one-sided) step: small enough that lr²·A² terms stay far below lr·|formula| ≥ lr·1e-4.
    tiny_lr = 1e-7
    step = theory.single_token_delta(torch.tensor(z), action, advantage, tiny_lr).numpy()
    actual = entropy_np(z + step) - entropy_np(z)
    sign = int(polarity(log_pa, torch.tensor(z)[None], torch.tensor([advantage], dtype=torch.float64))[0])
    assert sign == int(np.sign(actual))


def test_sandbox_steps_by_the_algorithms_own_loss():
    """One GRPO rollout with one mini-batch: Δz = η·mean_i A_i·(e_{a_i} − π), A group-normalised by hand."""
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.0]])
    logits = torch.tensor([[0.3, -0.2, 0.1, 0.0]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(7)
    new_logits, _ = theory.algorithm_update(logits, rewards, algorithms.get("grpo")(), lr=0.5, group_size=8,
                                            minibatches=1, generator=generator)
    replay = torch.Generator().manual_seed(7)
    actions = torch.multinomial(torch.softmax(logits, -1), 8, replacement=True, generator=replay)[0]
    scores = rewards[0, actions].double()
    adv = (scores - scores.mean()) / (scores.std(unbiased=True) + 1e-6)
    pi = torch.softmax(logits[0], -1)
    expected = sum(adv[i] * (torch.nn.functional.one_hot(actions[i], 4).double() - pi) for i in range(8)) / 8
    torch.testing.assert_close(new_logits[0] - logits[0], 0.5 * expected, atol=1e-6, rtol=1e-6)


def test_sampled_training_is_reproducible_from_the_seed():
    kwargs = dict(rewards=[1.0, 0.0, 0.3], method="grpo", steps=5, lr=0.5, seed=3)
    first, second = theory.train_bandit(**kwargs), theory.train_bandit(**kwargs)
    assert first.entropy == second.entropy
    assert theory.train_bandit(**{**kwargs, "seed": 4}).entropy != first.entropy


def test_unknown_method_and_bad_shapes_raise():
    with pytest.raises(KeyError, match="unknown algorithm"):
        theory.train_bandit([1.0, 0.0], method="nope", steps=1)
    with pytest.raises(ValueError, match="init_logits"):
        theory.train_bandit([1.0, 0.0], init_logits=[0.0, 0.0, 0.0], steps=1)
    with pytest.raises(ValueError, match="rewards"):
        theory.train_bandit([1.0], steps=1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: intra-op threads only add contention (100x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _contextual_bandit(seed: int = 0, states: int = 8, actions: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Binary rewards, action 0 always correct and a priori likely: Cov(log π, A) > 0, entropy falls under PG."""
    rng = np.random.default_rng(seed)
    rewards = (rng.random((states, actions)) < 0.4).astype(float)
    rewards[:, 0] = 1.0
    logits = rng.normal(0.0, 1.0, (states, actions))
    logits[:, 0] += 1.0
    return rewards, logits


def _entropy_after(method: str, seed: int, **algorithm_kwargs) -> float:
    rewards, logits = _contextual_bandit()
    trajectory = theory.train_bandit(rewards, method, steps=30, lr=0.3, init_logits=logits,
                                     algorithm_kwargs=algorithm_kwargs, group_size=16, minibatches=4, seed=seed)
    assert trajectory.entropy[-1] < trajectory.entropy[0]  # all of them learn (and lower entropy) ...
    assert trajectory.reward[-1] > trajectory.reward[0]
    return trajectory.entropy[-1]


@pytest.mark.parametrize("method, kwargs", [
    ("clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0, "clip_cov_ub": 5.0}),
    ("kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 1.0}),
])
def test_covariance_methods_keep_entropy_above_plain_pg_on_a_bandit(method, kwargs):
    """... but Clip-Cov and KL-Cov, acting on the high-covariance tokens, keep entropy higher (same seeds)."""
    if method not in algorithms.names():
        pytest.skip(f"{method} is not registered yet (covgym.algorithms.names() = {algorithms.names()})")
    for seed in range(2):
        plain = _entropy_after("grpo", seed)
        controlled = _entropy_after(method, seed, **kwargs)
        assert controlled > plain + 0.02, (method, seed, controlled, plain)
