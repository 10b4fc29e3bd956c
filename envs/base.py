"""Base classes for text environments with verifiable rewards.

Observations and actions are strings (``gymnasium.spaces.Text``). Two shapes of task:

- ``SingleTurnEnv``: a prompt, one answer, a graded reward, ``terminated=True``. Subclasses implement
  ``generate_problem`` (and may override ``grade``).
- ``MultiTurnEnv``: a prompt, then turns; each ``step(action)`` returns the env's reply (a tool result, a game
  observation) as the next observation, until the task ends (``terminated``) or ``max_turns`` is reached
  (``truncated``). Subclasses implement ``generate_problem`` and ``take_turn``.

What a rollout needs, uniformly for both: ``reset(seed)`` gives the prompt; ``stop_strings`` (a turn of generation
stops once one appears, kept in the action); ``max_turns``; ``reward_range`` (bounds of the episode's summed
reward); the final step's ``info`` has ``"correct"`` and ``"answer"``.
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


def text_space(max_length: int, extra_chars: str | frozenset[str] = "") -> spaces.Text:
    """A text space of the shared charset (plus ``extra_chars``); empty strings allowed (a model may say nothing)."""
    return spaces.Text(max_length=max_length, min_length=0, charset="".join(sorted(TEXT_CHARSET | set(extra_chars))))


def as_text(action: Any, max_length: int = MAX_ACTION_LENGTH) -> str:
    """An action as a string: non-strings become ``""``, overlong strings are cut (graders cap length again)."""
    return action[:max_length] if isinstance(action, str) else ""


@dataclass(frozen=True)
class Problem:
    """One task instance: the prompt shown, the gold answer, and anything else the grader needs."""

    prompt: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)


def split_of(prompt: str, test_fraction: float) -> str:
    """``"test"`` for a fixed ``test_fraction`` of prompts (by a hash of the text), else ``"train"``."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode("utf-8", "replace")).digest()[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"


class TextEnv(gym.Env[str, str]):
    """What single- and multi-turn text envs share: text spaces, train/test streams, problem drawing.

    Train and test streams are disjoint: every problem is assigned to a split by a hash of its prompt
    (``test_fraction`` of them go to "test"), and each stream only yields its own; ``split="all"`` yields both.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    reward_range = (0.0, 1.0)
    #: A turn of generation stops once one of these appears (the stop string is kept in the action).
    stop_strings: tuple[str, ...] = ()
    max_turns: int = 1

    def __init__(self, split: str = "train", test_fraction: float = 0.1, render_mode: str | None = None) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.split = split
        self.test_fraction = test_fraction
        self.render_mode = render_mode
        self.observation_space = text_space(MAX_OBSERVATION_LENGTH)
        self.action_space = text_space(MAX_ACTION_LENGTH)
        self.problem: Problem | None = None
        self.transcript: list[str] = []

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        """Draw one problem using only ``rng``."""
        raise NotImplementedError

    def split_key(self, problem: Problem) -> str:
        """The text that decides a problem's split (its prompt; override when prompts repeat across problems)."""
        return problem.prompt

    def in_split(self, key: str) -> bool:
        return self.split == "all" or split_of(key, self.test_fraction) == self.split

    def draw_problem(self, rng: np.random.Generator) -> Problem:
        """A problem of this env's split: generated problems are redrawn until one falls in the split."""
        for _ in range(10_000):
            problem = self.generate_problem(rng)
            if self.in_split(self.split_key(problem)):
                return problem
        raise RuntimeError(f"{type(self).__name__} could not draw a {self.split!r} problem in 10000 tries")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self.problem = self.draw_problem(self.np_random)
        self.transcript = [self.problem.prompt]
        return self.problem.prompt, {"answer": self.problem.answer, **self.problem.metadata}

    def oracle_action(self) -> str:
        """An optimal action in the current state, from the hidden answer: for tests, baselines and warm-up data."""
        raise NotImplementedError

    def render(self) -> str | None:
        if self.render_mode == "ansi" and self.problem is not None:
            return "".join(self.transcript)
        return None


class SingleTurnEnv(TextEnv):
    """Prompt → one answer → graded reward in ``[0, 1]``; terminates after one step.

    ``format_reward`` (in ``[0, 1)``) is given to a wrong answer that is in the expected form (``Grade.has_format``,
    e.g. a ``\\boxed{}``); ``instruction`` is appended to every prompt.
    """

    def __init__(self, split: str = "train", test_fraction: float = 0.1, format_reward: float = 0.0,
                 instruction: str = "", render_mode: str | None = None) -> None:
        super().__init__(split=split, test_fraction=test_fraction, render_mode=render_mode)
        if not 0.0 <= format_reward < 1.0:
            raise ValueError(f"format_reward must be in [0, 1), got {format_reward}")
        self.format_reward = format_reward
        self.instruction = instruction

    def grade(self, response: str, problem: Problem) -> Grade:
        """Default grader: the final answer against ``problem.answer`` (exact numbers, else math-verify)."""
        return grade_math(problem.answer, response)

    def oracle_action(self) -> str:
        """The gold answer in a ``\\boxed{}``."""
        if self.problem is None:
            raise RuntimeError("call reset() before oracle_action()")
        return f"\\boxed{{{self.problem.answer}}}"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        prompt, info = super().reset(seed=seed, options=options)
        prompt += self.instruction
        self.transcript = [prompt]
        return prompt, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.problem is None:
            raise RuntimeError("call reset() before step()")
        response = as_text(action)
        grade = self.grade(response, self.problem)
        reward = 1.0 if grade.correct else (self.format_reward if grade.has_format else 0.0)
        self.transcript.append(response)
        info = {"answer": self.problem.answer, "correct": grade.correct, "extracted": grade.extracted,
                "reason": grade.reason, "has_format": grade.has_format}
        return "", float(reward), True, False, info


@dataclass(frozen=True)
class Turn:
    """The env's side of one turn: its reply, the reward for this step, and whether the task is over."""

    observation: str
    reward: float = 0.0
    done: bool = False
    correct: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class MultiTurnEnv(TextEnv):
    """Prompt, then alternate: the policy acts, the env replies; ends on success/failure or after ``max_turns``.

    The episode's reward is the sum of step rewards (within ``reward_range``). Subclasses implement
    ``generate_problem`` (set up any per-episode state there or in ``start_episode``) and ``take_turn``.
    Every step's ``info`` has ``"turn"``; the last step's also has ``"correct"`` and ``"answer"``.
    """

    def __init__(self, max_turns: int, split: str = "train", test_fraction: float = 0.1,
                 render_mode: str | None = None) -> None:
        super().__init__(split=split, test_fraction=test_fraction, render_mode=render_mode)
        if int(max_turns) < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.max_turns = int(max_turns)
        self.turn = 0
        self.done = False

    def start_episode(self, problem: Problem) -> None:
        """Set per-episode state from the drawn problem (default: nothing)."""

    def take_turn(self, action: str) -> Turn:
        """Apply one policy turn (a string, already capped in length); must not raise on any string."""
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        prompt, info = super().reset(seed=seed, options=options)
        self.turn, self.done = 0, False
        self.start_episode(self.problem)  # type: ignore[arg-type]
        return prompt, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.problem is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            raise RuntimeError("the episode is over; call reset()")
        response = as_text(action)
        self.turn += 1
        result = self.take_turn(response)
        terminated = result.done
        truncated = not terminated and self.turn >= self.max_turns
        info: dict[str, Any] = {"turn": self.turn, **result.info}
        if terminated or truncated:
            info.update(correct=bool(result.correct and terminated), answer=self.problem.answer)
            self.done = True
        self.transcript += [response, result.observation]
        return result.observation, float(result.reward), terminated, truncated, info
