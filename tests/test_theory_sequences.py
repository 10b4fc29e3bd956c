"""The token-tree sandbox: exact values by brute-force enumeration, and the entropy law over sequences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.measure import theory


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_tree(vocab: int, length: int, seed: int) -> tuple[theory.TokenTree, torch.Tensor]:
    rng = np.random.default_rng(seed)
    tree = theory.TokenTree(vocab, length, (rng.random(vocab**length) < 0.4).astype(float))
    return tree, torch.tensor(rng.normal(0.0, 1.0, (tree.num_states, vocab)))


def brute_force(tree: theory.TokenTree, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Reach probability of each prefix and Q(prefix, a), by walking every complete sequence explicitly."""
    pi = torch.softmax(logits, -1).numpy()
    state_of = {}
    for level in range(tree.length):
        for index, prefix in enumerate(itertools.product(range(tree.vocab), repeat=level)):
            state_of[prefix] = tree.offsets[level] + index
    mass = np.zeros((tree.num_states, tree.vocab))  # P(reach s and take a)
    value = np.zeros((tree.num_states, tree.vocab))  # E[R; reach s and take a]
    for code, sequence in enumerate(itertools.product(range(tree.vocab), repeat=tree.length)):
        states = [state_of[sequence[:t]] for t in range(tree.length)]
        probability = float(np.prod([pi[s, a] for s, a in zip(states, sequence)]))
        for s, a in zip(states, sequence):
            mass[s, a] += probability
            value[s, a] += probability * float(tree.rewards[code])
    return mass.sum(-1), value / mass


@settings(deadline=None, max_examples=15)
@given(st.integers(2, 3), st.integers(1, 3), st.integers(0, 10**6))
def test_q_values_visitation_and_gradient_match_enumeration(vocab, length, seed):
    tree, logits = random_tree(vocab, length, seed)
    reach, q = brute_force(tree, logits)
    np.testing.assert_allclose(tree.q_values(logits).numpy(), q, atol=1e-12)
    np.testing.assert_allclose(tree.state_visitation(logits).numpy() * length, reach, atol=1e-12)
    # Policy-gradient theorem: ∂E[R]/∂z(s, a) = P(reach s)·π(a|s)·A(s, a).
    parameters = logits.clone().requires_grad_(True)
    tree.expected_reward(parameters).backward()
    expected = reach[:, None] * torch.softmax(logits, -1).numpy() * tree.advantages(logits).numpy()
    np.testing.assert_allclose(parameters.grad.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("method", ["vanilla_pg", "natural_pg"])
def test_first_order_law_over_sequences(method):
    tree, logits = random_tree(3, 3, seed=1)
    for lr, tolerance in ((1e-2, 5e-2), (1e-3, 5e-3)):
        trajectory = theory.train_sequence(tree, method, steps=3, lr=lr, init_logits=logits)
        actual, predicted = np.array(trajectory.actual_change), np.array(trajectory.predicted_change)
        np.testing.assert_allclose(actual, predicted, rtol=tolerance)
    assert trajectory.reward[-1] > trajectory.reward[0]


def test_natural_pg_entropy_change_is_minus_lr_times_covariance():
    tree, logits = random_tree(3, 2, seed=4)
    lr = 1e-4
    trajectory = theory.train_sequence(tree, "natural_pg", steps=1, lr=lr, init_logits=logits)
    assert trajectory.actual_change[0] == pytest.approx(-lr * trajectory.covariance[0], rel=1e-2)


def test_lm_algorithm_on_sequences_learns_and_is_seeded():
    tree, logits = random_tree(3, 3, seed=2)
    first = theory.train_sequence(tree, "grpo", steps=15, lr=0.5, init_logits=logits, group_size=16, seed=0)
    again = theory.train_sequence(tree, "grpo", steps=15, lr=0.5, init_logits=logits, group_size=16, seed=0)
    assert first.entropy == again.entropy
    assert first.reward[-1] > first.reward[0] + 0.1
    with pytest.raises(ValueError, match="rewards"):
        theory.TokenTree(3, 2, [0.0] * 8)
