"""Base classes for text environments with verifiable rewards.

Observations and actions are strings (``gymnasium.spaces.Text``). A single-turn task shows a prompt, takes one
answer, grades it and terminates. Subclasses implement ``generate_problem`` (and may override ``grade``).
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from covgym.envs.grading import Grade, grade_math

#: Characters observations and actions may contain: printable ASCII (covers LaTeX and code) plus common unicode.
TEXT_CHARSET = frozenset(string.printable) | frozenset("×÷−–—…·²³√π∞≤≥≠±°“”‘’")
MAX_OBSERVATION_LENGTH = 8192
MAX_ACTION_LENGTH = 8192


def text_space(max_length: int) -> spaces.Text:
    """A text space of the shared charset; empty strings allowed (a model may say nothing)."""
    return spaces.Text(max_length=max_length, min_length=0, charset="".join(sorted(TEXT_CHARSET)))


@dataclass(frozen=True)
class Problem:
    """One task instance: the prompt shown, the gold answer, and anything else the grader needs."""

    prompt: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)


class SingleTurnEnv(gym.Env[str, str]):
    """Prompt → one answer → graded reward in ``[0, 1]``; terminates after one step.

    Train and test streams are disjoint: every problem is assigned to a split by a hash of its prompt
    (``test_fraction`` of them go to "test"), and each stream only yields its own.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    reward_range = (0.0, 1.0)

    def __init__(self, split: str = "train", test_fraction: float = 0.1, format_reward: float = 0.0,
                 instruction: str = "", render_mode: str | None = None) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if not 0.0 <= format_reward < 1.0:
            raise ValueError(f"format_reward must be in [0, 1), got {format_reward}")
        self.split = split
        self.test_fraction = test_fraction
        self.format_reward = format_reward
        self.instruction = instruction
        self.render_mode = render_mode
        self.observation_space = text_space(MAX_OBSERVATION_LENGTH)
        self.action_space = text_space(MAX_ACTION_LENGTH)
        self.problem: Problem | None = None
        self._last_response = ""

    # ------------------------------------------------------------ subclass hooks
    def generate_problem(self, rng: np.random.Generator) -> Problem:
        """Draw one problem using only ``rng``."""
        raise NotImplementedError

    def grade(self, response: str, problem: Problem) -> Grade:
        """Default grader: the final answer against ``problem.answer`` (exact numbers, else math-verify)."""
        return grade_math(problem.answer, response)

    # ------------------------------------------------------------ gymnasium API
    def in_split(self, prompt: str) -> bool:
        if self.split == "all":
            return True
        bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") / 2**64
        return (bucket < self.test_fraction) == (self.split == "test")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        for _ in range(10_000):
            problem = self.generate_problem(self.np_random)
            if self.in_split(problem.prompt):
                break
        else:
            raise RuntimeError(f"{type(self).__name__} could not draw a {self.split!r} problem in 10000 tries")
        self.problem = problem
        self._last_response = ""
        prompt = problem.prompt + (self.instruction or "")
        return prompt, {"answer": problem.answer, **problem.metadata}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.problem is None:
            raise RuntimeError("call reset() before step()")
        grade = self.grade(action, self.problem)
        reward = 1.0 if grade.correct else (self.format_reward if grade.has_format else 0.0)
        self._last_response = action if isinstance(action, str) else ""
        info = {"answer": self.problem.answer, "correct": grade.correct, "extracted": grade.extracted,
                "reason": grade.reason, "has_format": grade.has_format}
        return "", float(reward), True, False, info

    def render(self) -> str | None:
        if self.render_mode == "ansi" and self.problem is not None:
            return f"{self.problem.prompt}{self._last_response}"
        return None
