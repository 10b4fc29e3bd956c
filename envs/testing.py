"""Helpers to exercise a text env without a model: play an episode with a scripted policy, check the basics.

A policy here is any function ``(observation, env) -> action``. ``oracle`` plays the env's own
``oracle_action``; ``always(text)`` and ``echo`` are degenerate policies a reward must not favour.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym

Policy = Callable[[str, gym.Env], str]


@dataclass
class Episode:
    """One played episode: summed reward, how it ended, the last ``info``, and the slowest step in seconds."""

    total_reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    slowest_step_s: float = 0.0


def run_episode(env: gym.Env, policy: Policy, seed: int) -> Episode:
    """Reset with ``seed`` and step ``policy`` until the episode ends (at most ``max_turns`` steps)."""
    base = env.unwrapped
    observation, info = env.reset(seed=seed)
    episode = Episode(0.0, False, False, info, observations=[observation])
    for _ in range(getattr(base, "max_turns", 1)):
        action = policy(observation, base)
        start = time.perf_counter()
        observation, reward, terminated, truncated, info = env.step(action)
        episode.slowest_step_s = max(episode.slowest_step_s, time.perf_counter() - start)
        episode.total_reward += float(reward)
        episode.actions.append(action)
        episode.observations.append(observation)
        episode.terminated, episode.truncated, episode.info = terminated, truncated, info
        if terminated or truncated:
            break
    return episode


def oracle(observation: str, env: gym.Env) -> str:  # noqa: ARG001
    """The env's own optimal action (``oracle_action``)."""
    return env.unwrapped.oracle_action()  # type: ignore[attr-defined]


def always(text: str) -> Policy:
    """A policy that says ``text`` every turn (empty answer, always the same move, always the same guess)."""
    return lambda observation, env: text


def echo(observation: str, env: gym.Env) -> str:  # noqa: ARG001
    """A policy that repeats the last observation (the prompt, then the env's replies)."""
    return observation


def check_text_env(env: gym.Env, seeds: range = range(20)) -> None:
    """``check_env`` with warnings as errors, then the oracle reaches ``reward_range[1]`` for every seed and
    ends the episode properly. Raises ``AssertionError`` naming the seed that fails."""
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    best = env.unwrapped.reward_range[1]
    for seed in seeds:
        episode = run_episode(env, oracle, seed)
        assert episode.terminated and not episode.truncated, f"seed {seed}: the oracle did not finish"
        assert episode.info.get("correct") is True, f"seed {seed}: the oracle was graded wrong: {episode.info}"
        assert abs(episode.total_reward - best) < 1e-9, f"seed {seed}: oracle reward {episode.total_reward}"
