"""What the TRL and verl adapters share: building a single-turn env, drawing its prompts, grading a response.

A problem travels to another engine as ``(prompt, answer, env_seed)``. Grading re-creates the problem from its
seed (``env.reset(seed=env_seed)``) and scores the response with the env's own ``step``, so the reward is exactly
the one covgym's trainer would give, graders that need more than the answer (Countdown's numbers, a
linear system's variables) included. Without a seed, the response is graded against the answer alone.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

import covgym.envs  # noqa: F401  (registers the env ids)
from covgym.envs.base import Problem, SingleTurnEnv


def make_single_turn_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> SingleTurnEnv:
    """The unwrapped env ``env_id`` built with ``env_kwargs``; a clear error for a multi-turn env."""
    if env_id not in gym.registry:
        known = ", ".join(sorted(name for name in gym.registry if name.startswith("covgym/")))
        raise ValueError(f"env_id {env_id!r} is not registered; known covgym envs: {known}")
    env = gym.make(env_id, **dict(env_kwargs or {})).unwrapped
    if not isinstance(env, SingleTurnEnv):
        raise ValueError(f"env_id {env_id!r} is a {type(env).__name__}, not a SingleTurnEnv: the TRL and verl "
                         "adapters take single-turn envs only (prompt -> one answer -> graded reward)")
    return env


def problem_seeds(count: int, seed: int) -> list[int]:
    """``count`` env seeds (31-bit) drawn from ``seed``: the dataset is a pure function of ``(env, seed)``."""
    if count < 1:
        raise ValueError(f"num_prompts must be >= 1, got {count}")
    return np.random.default_rng(seed).integers(0, 2**31 - 1, size=count).tolist()


def prompt_rows(env: SingleTurnEnv, seeds: list[int]) -> list[dict[str, Any]]:
    """One ``{"prompt", "answer", "env_seed"}`` row per seed (the prompt includes the env's instruction)."""
    rows = []
    for env_seed in seeds:
        prompt, info = env.reset(seed=int(env_seed))
        rows.append({"prompt": prompt, "answer": str(info["answer"]), "env_seed": int(env_seed)})
    return rows


def completion_text(completion: Any) -> str:
    """The text of a completion: a string as is; a conversation (list of messages) as its assistant turns.

    Message content may be a string or a list of parts (``{"type": "text", "text": ...}``); anything else counts
    as empty text, which every grader scores as wrong.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return ""
    pieces = []
    for message in completion:
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, (list, tuple)):
            pieces.extend(part.get("text", "") for part in content
                          if isinstance(part, Mapping) and isinstance(part.get("text", ""), str))
    return "".join(pieces)


class EnvGrader:
    """Grades responses with one env's own reward rule (correct: 1, well-formed but wrong: ``format_reward``, else 0).

    Args:
        env_id: a registered single-turn env id.
        env_kwargs: the kwargs the prompts were drawn with (``split`` included): a seed only reproduces its problem
            under the same kwargs.
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.env = make_single_turn_env(env_id, self.env_kwargs)

    def reward(self, response: str, env_seed: int | None = None, answer: str | None = None) -> float:
        """The env's reward for ``response`` to the problem of ``env_seed`` (else to the gold ``answer``).

        Raises:
            ValueError: neither ``env_seed`` nor ``answer`` is given, or the seed's problem has a different answer
                than ``answer`` (the prompts were drawn with other env kwargs or another covgym version).
        """
        if env_seed is not None:
            _, info = self.env.reset(seed=int(env_seed))
            if answer is not None and str(info["answer"]) != str(answer):
                raise ValueError(f"env_seed {env_seed} gives answer {info['answer']!r} under {self.env_id} "
                                 f"{self.env_kwargs}, but the data says {answer!r}: build the prompts and the grader "
                                 "with the same env_id and env_kwargs (split included)")
        elif answer is not None:
            self.env.reset(seed=0)  # a valid episode state; its problem is replaced by the gold answer below
            self.env.problem = Problem(prompt="", answer=str(answer))
        else:
            raise ValueError("grading needs env_seed or answer (the dataset's 'env_seed' or 'answer' column)")
        try:
            _, reward, _, _, _ = self.env.step(response)
        except (KeyError, TypeError, AttributeError) as error:
            if env_seed is not None:
                raise
            raise ValueError(f"{self.env_id}'s grader needs more than the gold answer ({type(error).__name__}: "
                             f"{error}); give the env_seed of each problem (the 'env_seed' column)") from None
        return float(reward)
