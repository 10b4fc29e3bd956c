"""The mechanism testbed's tasks: write digits that add up to a target — many correct answers per problem.

Why this task: entropy collapse is a statement about a policy that *could* answer in many ways and learns to
answer in one. With one correct answer per problem (``Arithmetic-v0``) almost all entropy sits in a single answer
token and reward and entropy are nearly the same thing. Here a problem such as "13 from 3 digits, no 5" has dozens
of correct answers (two-digit problems up to 9), so a warm-started model starts diverse *and* partly wrong; RL first removes wrong answers
(reward rises fast while entropy falls) and then, under plain policy gradient, keeps sharpening onto one answer per
problem (entropy falls, reward barely moves) — the saturation the law ``R = −a·exp(H) + b`` describes. Entropy is
spread over several tokens per response (each free digit is a choice), and pass@k measures whether the diversity
survives.

Two registered tasks share the problems:

- ``covgym/DigitSum-v0``: single turn.
- ``covgym/DigitSumFeedback-v0``: multi-turn; a wrong attempt gets the checker's reply (the attempt's sum, or a
  format complaint) and the policy tries again, up to ``max_turns`` attempts.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache
from typing import Any

import numpy as np

from covgym.envs.base import MultiTurnEnv, Problem, SingleTurnEnv, Turn
from covgym.envs.grading import Grade

_ATTEMPT = re.compile(r"^\s*(\d(?:\+\d){1,7})\s*$")
MIN_SOLUTIONS = 3  # problems with fewer correct answers are not drawn: there would be nothing to collapse
#: Share of problems held out. With up to two banned digits there are 1,424 problems; this holds out ≈ 40 % of them
#: (the number is exact and tested), so that one evaluation can grade ≥ 500 distinct problems, each once.
TEST_FRACTION = 0.4


def banned_set(banned: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    """The banned digits as a sorted tuple (a single digit and ``None`` are accepted as older problems wrote them)."""
    if banned is None:
        return ()
    if isinstance(banned, int):
        return (banned,)
    return tuple(sorted(int(d) for d in banned))


@lru_cache(maxsize=None)
def solutions(target: int, terms: int, banned: int | tuple[int, ...] | None) -> tuple[str, ...]:
    """Every correct answer (ordered tuples of digits 1–9, the ``banned`` ones excluded, summing to ``target``)."""
    excluded = banned_set(banned)
    digits = [d for d in range(1, 10) if d not in excluded]
    return tuple("+".join(map(str, combo)) for combo in itertools.product(digits, repeat=terms)
                 if sum(combo) == target)


def parse_attempt(text: str) -> tuple[int, ...] | None:
    """The digits of an attempt written ``d+d+…+d`` (surrounding whitespace allowed), else None."""
    match = _ATTEMPT.match(text[:64])
    return tuple(int(c) for c in match.group(1).split("+")) if match else None


def check(text: str, problem: Problem) -> tuple[bool, str]:
    """Whether ``text`` solves ``problem``, and the checker's one-line verdict (what the feedback env says)."""
    meta = problem.metadata
    digits = parse_attempt(text)
    if digits is None:
        return False, "write digits joined by +"
    if len(digits) != meta["terms"]:
        return False, f"use {meta['terms']} digits"
    if 0 in digits or set(digits) & set(banned_set(meta["banned"])):
        return False, "digit not allowed"
    total = sum(digits)
    return total == meta["target"], f"sum is {total}"


class _DigitSumProblems:
    """Problem drawing shared by both tasks: target, number of digits and one banned digit (or none)."""

    def _init_problems(self, terms: tuple[int, ...], ban_digit: bool, max_banned: int) -> None:
        terms = tuple(int(t) for t in terms)
        if not terms or any(not 2 <= t <= 6 for t in terms):
            raise ValueError(f"terms must be a non-empty list of integers in 2..6, got {terms}")
        if int(max_banned) not in (1, 2):
            raise ValueError(f"max_banned must be 1 or 2, got {max_banned}")
        self.terms, self.ban_digit, self.max_banned = terms, bool(ban_digit), int(max_banned)

    def _draw_banned(self, rng: np.random.Generator) -> tuple[int, ...]:
        """One in ten problems bans nothing; the others ban one digit, or (``max_banned=2``) one or two digits."""
        if not self.ban_digit or rng.random() < 0.1:
            return ()
        count = 1 if self.max_banned == 1 else int(rng.integers(1, 3))
        return tuple(sorted(int(d) for d in rng.choice(np.arange(1, 10), size=count, replace=False)))

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        while True:
            terms = int(rng.choice(self.terms))
            target = int(rng.integers(terms, 9 * terms + 1))
            banned = self._draw_banned(rng)
            answers = solutions(target, terms, banned)
            if len(answers) >= MIN_SOLUTIONS:
                break
        rule = f", no {' or '.join(map(str, banned))}" if banned else ""
        prompt = f"{target} from {terms} digits{rule}:"
        return Problem(prompt=prompt, answer=answers[0],
                       metadata={"target": target, "terms": terms, "banned": banned or None,
                                 "num_solutions": len(answers)})

    def split_key(self, problem: Problem) -> str:
        """Target, digit count and banned digits: the same key in both tasks (their prompts are worded
        differently), so a problem held out of one task is held out of the other, and of the warm start that
        learns from both. (A single banned digit keys as ``(5,)``.)"""
        meta = problem.metadata
        banned = banned_set(meta["banned"])
        return f"digit-sum {meta['target']} {meta['terms']} {banned if banned else None}"

    def sample_solution(self, problem: Problem, rng: np.random.Generator) -> str:
        """A uniformly random correct answer (for warm-start demonstrations)."""
        meta = problem.metadata
        answers = solutions(meta["target"], meta["terms"], banned_set(meta["banned"]))
        return answers[int(rng.integers(len(answers)))]

    def sample_near_miss(self, problem: Problem, rng: np.random.Generator) -> str:
        """A well-formed wrong answer whose sum is off by 1 or 2 (a plausible mistake)."""
        meta = problem.metadata
        digits = [int(c) for c in self.sample_solution(problem, rng).split("+")]
        for _ in range(100):
            index, delta = int(rng.integers(len(digits))), int(rng.choice([-2, -1, 1, 2]))
            value = digits[index] + delta
            if 1 <= value <= 9 and value not in banned_set(meta["banned"]):
                digits[index] = value
                return "+".join(map(str, digits))
        return "+".join(map(str, digits[:-1] + [digits[-1] % 9 + 1]))


class DigitSumEnv(_DigitSumProblems, SingleTurnEnv):
    """Write ``terms`` digits (1–9, one digit possibly banned) that add up to a target.

    ## Description
    A problem is a target, a number of digits (``terms``, drawn from the ``terms`` knob) and, with
    ``ban_digit=True``, one digit that may not be used. Only problems with at least 3 correct answers are drawn;
    two-digit problems have up to 9, three-digit ones up to 73 (``info["num_solutions"]``). This is the math task of the mechanism testbed
    (``covgym bench --suite mechanism``): see the module docstring for why.

    ## Observation
    ``"13 from 3 digits, no 5:"`` (or without the ban clause).

    ## Action
    The digits joined by ``+``, e.g. ``"4+2+7"``; surrounding whitespace is ignored, anything else is wrong.

    ## Rewards
    1 for a correct answer, 0 otherwise (``format_reward`` for a well-formed wrong one).

    ## Episode End
    Terminates after one step.

    ## Version History
    - v0: first version.
    """

    def __init__(self, terms: tuple[int, ...] | list[int] = (2, 3), ban_digit: bool = True, max_banned: int = 2,
                 test_fraction: float = TEST_FRACTION, **kwargs: Any) -> None:
        super().__init__(test_fraction=test_fraction, **kwargs)
        self._init_problems(tuple(terms), ban_digit, max_banned)

    def grade(self, response: str, problem: Problem) -> Grade:
        correct, verdict = check(response, problem)
        return Grade(correct, response.strip()[:64] if parse_attempt(response) else None, verdict,
                     parse_attempt(response) is not None)

    def oracle_action(self) -> str:
        return self.problem.answer  # type: ignore[union-attr]


class DigitSumFeedbackEnv(_DigitSumProblems, MultiTurnEnv):
    """The same problems, with a checker in the loop: a wrong attempt is answered and the policy tries again.

    ## Description
    The agentic task of the mechanism testbed. Each turn the policy writes one attempt ending in a newline; the
    checker replies with what is wrong (``"sum is 12"``, ``"use 3 digits"``, ``"digit not allowed"``, ``"write
    digits joined by +"``), and the policy may use the reply to fix its attempt. The episode ends at the first
    correct attempt or after ``max_turns`` attempts.

    ## Observation
    First ``"13 from 3 digits, no 5. Try:"``, then after a wrong attempt ``"sum is 12. Try:"``.

    ## Action
    One attempt a turn, e.g. ``"4+2+6\\n"``; generation of a turn stops at a newline (``stop_strings``).

    ## Rewards
    ``retry_discount^(t−1)`` for solving it on attempt t, on the turn it is solved; 0 otherwise. With the default
    ``retry_discount=1`` a repaired answer pays as much as a first-try one, so outcome-reward GRPO reinforces a wrong
    first attempt followed by a repair exactly as much as a right first attempt, and held-out accuracy does not rise
    (measured: docs/benchmarks.md); the mechanism suite uses 0.5.

    ## Episode End
    Terminated by a correct attempt; truncated after ``max_turns`` attempts.

    ## Version History
    - v0: first version.
    """

    stop_strings = ("\n",)

    def __init__(self, terms: tuple[int, ...] | list[int] = (2, 3), ban_digit: bool = True, max_banned: int = 2,
                 max_turns: int = 3, retry_discount: float = 1.0, test_fraction: float = TEST_FRACTION,
                 **kwargs: Any) -> None:
        super().__init__(max_turns=max_turns, test_fraction=test_fraction, **kwargs)
        self._init_problems(tuple(terms), ban_digit, max_banned)
        if not 0.0 < float(retry_discount) <= 1.0:
            raise ValueError(f"retry_discount must be in (0, 1], got {retry_discount}")
        self.retry_discount = float(retry_discount)

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        problem = super().generate_problem(rng)
        return Problem(prompt=problem.prompt[:-1] + ". Try:", answer=problem.answer, metadata=problem.metadata)

    def oracle_action(self) -> str:
        return self.problem.answer + "\n"  # type: ignore[union-attr]

    def take_turn(self, action: str) -> Turn:
        correct, verdict = check(action, self.problem)  # type: ignore[arg-type]
        if correct:  # on attempt t (self.turn, counted from 1): retry_discount^(t−1), so a first-try answer pays most
            reward = self.retry_discount ** (self.turn - 1)
            return Turn("", reward=reward, done=True, correct=True, info={"verdict": verdict})
        return Turn(f"{verdict}. Try:", info={"verdict": verdict})

    @staticmethod
    def repair(attempt: str, problem: Problem) -> str | None:
        """The smallest fix of a well-formed attempt given the checker's sum (for demonstrations), or None."""
        digits = parse_attempt(attempt)
        meta = problem.metadata
        if digits is None or len(digits) != meta["terms"]:
            return None
        gap = meta["target"] - sum(digits)
        for index in reversed(range(len(digits))):
            value = digits[index] + gap
            if 1 <= value <= 9 and value not in banned_set(meta["banned"]):
                fixed = list(digits)
                fixed[index] = value
                return "+".join(map(str, fixed))
        return None
