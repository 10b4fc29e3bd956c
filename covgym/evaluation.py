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
    grading_deadline_s: float | None = None  # per batch of problems; ungraded responses count as wrong


def make_eval_envs(spec: EvalSpec, count: int) -> list[gym.Env]:
    from covgym.envs import make_split_env

    return [make_split_env(spec.env_id, spec.env_kwargs, "test") for _ in range(count)]


def evaluate(policy: Policy, spec: EvalSpec, sampling: SamplingParams, envs: list[gym.Env] | None = None,
             batch_problems: int = 64, first_batch_out: list | None = None) -> dict[str, float]:
    """Accuracy (mean@k) and its 95 % CI over problems, pass@1, 2, 4, …, k, the mean number of distinct correct
    answers per problem among its k samples, mean token entropy and response length on ``spec.problems``
    test problems. ``first_batch_out``, when given, receives the first scored batch (rows: problem-major, k
    samples each), for the caller to keep samples of."""
    if spec.problems == 0:
        return {}
    k = spec.samples
    rng = np.random.default_rng(spec.seed)
    problem_seeds = rng.integers(0, 2**31 - 1, size=spec.problems).tolist()
    correct_per_problem: list[int] = []
    distinct_correct: list[int] = []
    entropy_sum, token_count, length_sum, sequences = 0.0, 0.0, 0.0, 0
    batch_problems = max(1, min(batch_problems, spec.problems))
    envs = envs or make_eval_envs(spec, batch_problems * k)
    for start in range(0, spec.problems, batch_problems):
        seeds = problem_seeds[start:start + batch_problems]
        env_seeds = [s for s in seeds for _ in range(k)]
        episodes = run_episodes(policy, envs[:len(env_seeds)], env_seeds, sampling, seed=spec.seed + start,
                                max_turns=spec.max_turns, max_total_tokens=spec.max_total_tokens,
                                grading_deadline_s=spec.grading_deadline_s)
        batch = score_batch(policy, pack_episodes(episodes, list(range(len(episodes))), policy.pad_token_id))
        if first_batch_out is not None and start == 0:
            first_batch_out.append(batch)
        entropy_sum += float((batch.entropies * batch.response_mask).sum())
        token_count += float(batch.response_mask.sum())
        length_sum += float(batch.response_mask.sum())
        sequences += len(episodes)
        for index in range(len(seeds)):
            group = episodes[index * k:(index + 1) * k]
            solved = [e for e in group if e.info.get("correct", False)]
            correct_per_problem.append(len(solved))
            distinct_correct.append(len({e.texts[-1].strip() for e in solved if e.texts}))  # diversity kept
    accuracy = sum(correct_per_problem) / (len(correct_per_problem) * k)
    return {
        "accuracy": accuracy,
        "accuracy_ci95": ci95_half_width([c / k for c in correct_per_problem]),
        **pass_at_k_curve(k, correct_per_problem),
        "distinct_correct_mean": float(np.mean(distinct_correct)),
        "entropy_mean": entropy_sum / max(token_count, 1.0),
        "response_length_mean": length_sum / max(sequences, 1),
    }


def pass_at_k_curve(num_samples: int, correct_per_problem: list[int]) -> dict[str, float]:
    """``pass@k`` for k = 1, 2, 4, … up to ``num_samples`` (and ``num_samples`` itself), averaged over problems,
    each from all n samples with the unbiased estimator — so pass@1 is mean@n, not the first sample's grade."""
    ks = sorted({2**i for i in range(num_samples.bit_length()) if 2**i <= num_samples} | {num_samples})
    return {f"pass@{k}": float(np.mean([pass_at_k(num_samples, c, k) for c in correct_per_problem])) for k in ks}


def ci95_half_width(values: list[float]) -> float:
    """Half-width of the Student-t 95 % confidence interval of the mean of ``values`` (nan below 2 values)."""
    from scipy import stats

    if len(values) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))

