"""Rollouts take old log-probs and entropies from the sampler instead of a second pass (issue 15): they must equal
what that pass (``score_batch``, itself tested against full logits in test_policy) gives for the same batch."""

from __future__ import annotations

import gymnasium as gym
import torch

import covgym.envs  # noqa: F401
from covgym.models.policy import SamplingParams
from covgym.train.rollout import collect_rollout, score_batch


def _rollout(policy, env_id: str = "covgym/Arithmetic-v0"):
    envs = [gym.make(env_id, split="train") for _ in range(6)]
    seeds = [11, 11, 11, 12, 12, 12]
    return collect_rollout(policy, envs, seeds, [0, 0, 0, 1, 1, 1], SamplingParams(0.9, 1.0, 10), seed=3)


def test_sampled_old_log_probs_and_entropies_equal_a_scoring_pass(random_policy):
    random_policy.temperature = 0.9
    batch, _ = _rollout(random_policy)
    assert batch.response_mask.sum() > 0
    rescored = score_batch(random_policy, batch)
    torch.testing.assert_close(batch.old_log_probs, rescored.old_log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.entropies, rescored.entropies, atol=1e-5, rtol=1e-5)
    assert bool((batch.old_log_probs[batch.response_mask > 0] < 0).all())


def test_multi_turn_episodes_take_sampled_scores_only_on_policy_tokens(random_policy):
    batch, _ = _rollout(random_policy, "covgym/NumberGuess-v0")
    assert any(len(info["texts"]) > 2 for info in batch.info)  # a turn, the game's reply, another turn
    rescored = score_batch(random_policy, batch)
    torch.testing.assert_close(batch.old_log_probs, rescored.old_log_probs, atol=1e-5, rtol=1e-5)
    assert bool((batch.old_log_probs[batch.response_mask == 0] == 0).all())


def test_reduced_precision_falls_back_to_the_scoring_pass(random_policy):
    random_policy.autocast_bf16 = True
    batch, _ = _rollout(random_policy)
    rescored = score_batch(random_policy, batch)
    torch.testing.assert_close(batch.old_log_probs, rescored.old_log_probs, atol=0, rtol=0)  # that very pass
