"""Held-out evaluation: sample k responses to each of N distinct test problems and grade them.

Accuracy is mean@k (the expected pass@1 at the rollout temperature); pass@k uses the unbiased estimator of
Chen et al. (2021) from the n = k samples, which for n = k is "any of the k is correct".

The N problems are distinct (no problem is graded twice in one evaluation): seeds are drawn until N different
prompts are found. Drawing with replacement from a small held-out set weights some problems twice and others not
at all, which adds noise to every comparison; distinct problems remove that part of the noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from covgym.models.policy import Policy, SamplingParams
from covgym.train.rollout import pack_episodes, run_episodes, sampled_scores, score_batch


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
    """``count`` test-split envs. The first is made with Gymnasium's passive checker, the rest without: the checker
    runs once per env object and, over an evaluation's thousand envs, cost about a second of a 15-second
    evaluation of the tiny model."""
    from covgym.envs import make_split_env

    return [make_split_env(spec.env_id, spec.env_kwargs, "test", check=index == 0) for index in range(count)]


def evaluate(policy: Policy, spec: EvalSpec, sampling: SamplingParams, envs: list[gym.Env] | None = None,
             batch_problems: int = 64, first_batch_out: list | None = None) -> dict[str, float]:
    """Accuracy (mean@k) and its 95 % CI over problems, pass@1, 2, 4, …, k, the mean number of distinct correct
    answers per problem among its k samples, mean token entropy and response length on ``spec.problems``
    test problems. ``first_batch_out``, when given, receives the first scored batch (rows: problem-major, k
    samples each), for the caller to keep samples of."""
    if spec.problems == 0:
        return {}
    k = spec.samples
    batch_problems = max(1, min(batch_problems, spec.problems))
    envs = envs or make_eval_envs(spec, batch_problems * k)
    problem_seeds = distinct_problem_seeds(envs[0], spec.problems, spec.seed)
    correct_per_problem: list[int] = []
    distinct_correct: list[int] = []
    entropy_sum, token_count, length_sum, sequences = 0.0, 0.0, 0.0, 0
    for start in range(0, spec.problems, batch_problems):
        seeds = problem_seeds[start:start + batch_problems]
        env_seeds = [s for s in seeds for _ in range(k)]
        episodes = run_episodes(policy, envs[:len(env_seeds)], env_seeds, sampling, seed=spec.seed + start,
                                max_turns=spec.max_turns, max_total_tokens=spec.max_total_tokens,
                                grading_deadline_s=spec.grading_deadline_s)
        batch = pack_episodes(episodes, list(range(len(episodes))), policy.pad_token_id)
        sampled = sampled_scores(episodes, batch.input_ids.shape)  # the sampler's own numbers: no second pass
        batch = (batch.replace(old_log_probs=sampled[0] * batch.response_mask,
                               entropies=sampled[1] * batch.response_mask)
                 if sampled is not None else score_batch(policy, batch))
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


def distinct_problem_seeds(env: gym.Env, count: int, seed: int, max_draws_per_problem: int = 50,
                           strict: bool = False) -> list[int]:
    """``count`` reset seeds of ``env`` whose problems (prompts) are all different, drawn in a fixed order from
    ``seed``.

    A held-out split with fewer distinct problems than ``count`` (a small task) cannot give that many: ``strict``
    raises ``ValueError`` naming how many it found; otherwise the distinct ones are repeated in turn to make up
    ``count`` (every problem graded as evenly as possible) and a warning says so."""
    rng = np.random.default_rng(seed)
    seeds: list[int] = []
    seen: set[str] = set()
    draws = max(count * max_draws_per_problem, 1000)
    for _ in range(draws):
        if len(seeds) == count:
            return seeds
        candidate = int(rng.integers(0, 2**31 - 1))
        prompt, _ = env.reset(seed=candidate)
        if prompt not in seen:
            seen.add(prompt)
            seeds.append(candidate)
    if len(seeds) == count:
        return seeds
    name = env.spec.id if env.spec else type(env).__name__
    message = (f"evaluation: the held-out split of {name} gave only {len(seeds)} distinct problems in {draws} draws, "
               f"fewer than the {count} asked for")
    if strict or not seeds:
        raise ValueError(f"{message}; lower --eval-problems")
    warnings.warn(f"{message}: each is graded about {count / len(seeds):.1f} times", stacklevel=2)
    return [seeds[i % len(seeds)] for i in range(count)]


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

