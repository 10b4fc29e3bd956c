"""A feedback game: guess a secret number, told "higher" or "lower" after each guess."""

from __future__ import annotations

import math
import re

import numpy as np

from covgym.envs.base import MultiTurnEnv, Problem, Turn

_INTEGER = re.compile(r"-?\d{1,12}")


def binary_search_turns(high: int) -> int:
    """Guesses that halving needs in the worst case to find any number in ``1..high``."""
    return math.floor(math.log2(high)) + 1


class NumberGuessEnv(MultiTurnEnv):
    """Find a secret integer in ``1..high`` from "higher"/"lower" replies.

    ## Description
    The secret is uniform in ``1..high``. ``max_turns`` defaults to the worst case of binary search
    (``floor(log2(high)) + 1``, 7 for 100), so halving always wins and guessing at random rarely does; pass a
    larger ``max_turns`` for an easier game.

    ## Observation
    First ``"Guess my number from 1 to 100. I reply higher or lower.\\nGuess:"``, then after each guess
    ``"higher\\nGuess:"``, ``"lower\\nGuess:"`` or ``"say a number from 1 to 100\\nGuess:"``.

    ## Action
    One guess a turn: the first integer in the text (at most 12 digits). Generation of a turn stops at a
    newline (``stop_strings``).

    ## Rewards
    1 when the secret is guessed, 0 otherwise.

    ## Episode End
    Terminated when the secret is guessed; truncated after ``max_turns`` guesses.

    ## Version History
    - v0: first version.
    """

    stop_strings = ("\n",)

    def __init__(self, high: int = 100, max_turns: int | None = None, **kwargs) -> None:
        if not 2 <= high <= 10**9:
            raise ValueError(f"high must be in 2..1e9, got {high}")
        super().__init__(max_turns=binary_search_turns(high) if max_turns is None else max_turns, **kwargs)
        self.high = high
        self.secret, self.low, self.high_left = 1, 1, high

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        secret = int(rng.integers(1, self.high + 1))
        prompt = f"Guess my number from 1 to {self.high}. I reply higher or lower.\nGuess:"
        return Problem(prompt=prompt, answer=str(secret), metadata={"secret": secret})

    def split_key(self, problem: Problem) -> str:
        """Every prompt is the same, so train and test are told apart by the secret."""
        return problem.answer

    def start_episode(self, problem: Problem) -> None:
        self.secret = int(problem.metadata["secret"])
        self.low, self.high_left = 1, self.high

    def oracle_action(self) -> str:
        """Binary search: the middle of the range the replies so far leave open."""
        return f"{(self.low + self.high_left) // 2}\n"

    def take_turn(self, action: str) -> Turn:
        match = _INTEGER.search(action)
        if match is None:
            return Turn(f"say a number from 1 to {self.high}\nGuess:", info={"guess": None})
        guess = int(match.group())
        if guess == self.secret:
            return Turn("correct\n", reward=1.0, done=True, correct=True, info={"guess": guess})
        if self.secret > guess:
            self.low = max(self.low, guess + 1)
        else:
            self.high_left = min(self.high_left, guess - 1)
        hint = "higher" if self.secret > guess else "lower"
        return Turn(f"{hint}\nGuess:", info={"guess": guess})
