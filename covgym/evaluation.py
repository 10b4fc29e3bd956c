"""Held-out evaluation: sample k responses to each test problem and grade them.

Accuracy is mean@k (the expected pass@1 at the rollout temperature); pass@k uses the unbiased estimator of
Chen et al. (2021) from the n = k samples, which for n = k is "any of the k is correct".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from covgym.policy import Policy, SamplingParams
from covgym.rollout import pack_episodes, run_episodes, score_batch


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: ``1 − C(n−c, k)/C(n, k)``."""
    if num_samples - num_correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(num_samples - num_correct + 1, num_samples + 1)))


@dataclass(frozen=True)
class EvalSpec:
    env_id: str
    env_kwargs: dict[str, Any]
    problems: int = 64
    samples: int = 4
    seed: int = 12345
    max_turns: int = 16
    max_total_tokens: int = 1024


def make_eval_envs(spec: EvalSpec, count: int) -> list[gym.Env]:
    return [gym.make(spec.env_id, **{**spec.env_kwargs, "split": "test"}) for _ in range(count)]


def evaluate(policy: Policy, spec: EvalSpec, sampling: SamplingParams, envs: list[gym.Env] | None = None,
             batch_problems: int = 64) -> dict[str, float]:
    """Accuracy (mean@k), pass@k, mean token entropy and response length on ``spec.problems`` test problems."""
    if spec.problems == 0:
        return {}
    k = spec.samples
    rng = np.random.default_rng(spec.seed)
    problem_seeds = rng.integers(0, 2**31 - 1, size=spec.problems).tolist()
    correct_per_problem: list[int] = []
    entropy_sum, token_count, length_sum, sequences = 0.0, 0.0, 0.0, 0
    batch_problems = max(1, min(batch_problems, spec.problems))
    envs = envs or make_eval_envs(spec, batch_problems * k)
    for start in range(0, spec.problems, batch_problems):
        seeds = problem_seeds[start:start + batch_problems]
        env_seeds = [s for s in seeds for _ in range(k)]
        episodes = run_episodes(policy, envs[:len(env_seeds)], env_seeds, sampling, seed=spec.seed + start,
                                max_turns=spec.max_turns, max_total_tokens=spec.max_total_tokens)
        batch = score_batch(policy, pack_episodes(episodes, list(range(len(episodes))), policy.pad_token_id))
        entropy_sum += float((batch.entropies * batch.response_mask).sum())
        token_count += float(batch.response_mask.sum())
        length_sum += float(batch.response_mask.sum())
        sequences += len(episodes)
        for index in range(len(seeds)):
            group = episodes[index * k:(index + 1) * k]
            correct_per_problem.append(sum(bool(e.info.get("correct", False)) for e in group))
    accuracy = sum(correct_per_problem) / (len(correct_per_problem) * k)
    return {
        "accuracy": accuracy,
        f"pass@{k}": float(np.mean([pass_at_k(k, c, k) for c in correct_per_problem])),
        "entropy_mean": entropy_sum / max(token_count, 1.0),
        "response_length_mean": length_sum / max(sequences, 1),
    }

