"""Templated multi-step word problems with integer answers."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from covgym.envs.base import Problem, SingleTurnEnv

_PEOPLE = [("Ann", "she", "her"), ("Ben", "he", "his"), ("Cara", "she", "her"), ("Dev", "he", "his"),
           ("Eva", "she", "her"), ("Finn", "he", "his"), ("Gia", "she", "her"), ("Hugo", "he", "his")]
_ITEMS = ["apples", "marbles", "stickers", "pencils", "cards", "shells", "coins", "books"]
_CONTAINERS = ["boxes", "bags", "packs", "jars"]
T = TypeVar("T")


class WordProblemEnv(SingleTurnEnv):
    """Short stories where a quantity changes in ``num_steps`` steps; answer the final quantity.

    ## Description
    A person starts with some items; each step buys packs (``+ k*m``), finds some (``+ m``), gives some away
    (``- m``, never below zero), receives as many again (``* 2``) or shares equally and keeps one share
    (``/ k``, exact). Numbers stay below ``max_value`` per step, so the answer is a non-negative integer.

    ## Observation
    ``"Ann has 12 apples. She buys 3 bags of 5 apples. She gives 7 apples to Ben. How many apples does Ann
    have now?\\nAnswer:"`` plus the optional ``instruction``.

    ## Action
    Free text; the final answer is the last ``\\boxed{}`` or else the last number.

    ## Rewards
    1 if the final answer is right, else ``format_reward`` if a ``\\boxed{}`` answer is present, else 0.

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, num_steps: int = 2, max_value: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= num_steps <= 6:
            raise ValueError(f"num_steps must be in 1..6, got {num_steps}")
        if not 5 <= max_value <= 1000:
            raise ValueError(f"max_value must be in 5..1000, got {max_value}")
        self.num_steps, self.max_value = num_steps, max_value

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        def pick(options: Sequence[T]) -> T:
            return options[int(rng.integers(0, len(options)))]

        def number(low: int, high: int) -> int:
            return int(rng.integers(low, max(low, high) + 1))

        name, subject, possessive = pick(_PEOPLE)
        friend = pick([person[0] for person in _PEOPLE if person[0] != name])
        item, container = pick(_ITEMS), pick(_CONTAINERS)
        count = number(1, self.max_value)
        sentences = [f"{name} has {count} {item}."]
        pronoun = subject.capitalize()
        for _ in range(self.num_steps):
            kinds = ["buy", "find", "double"] + (["give"] if count > 1 else [])
            divisors = [k for k in range(2, 6) if count % k == 0]
            kinds += ["share"] if divisors else []
            kind = pick(kinds)
            if kind == "buy":
                packs, size = number(2, 5), number(2, self.max_value // 2)
                count += packs * size
                sentences.append(f"{pronoun} buys {packs} {container} of {size} {item}.")
            elif kind == "find":
                found = number(1, self.max_value)
                count += found
                sentences.append(f"{pronoun} finds {found} more {item}.")
            elif kind == "give":
                given = number(1, min(count - 1, self.max_value))
                count -= given
                sentences.append(f"{pronoun} gives {given} {item} to {friend}.")
            elif kind == "double":
                count *= 2
                sentences.append(f"{friend} gives {name} as many {item} as {subject} has.")
            else:
                parts = pick(divisors)
                count //= parts
                sentences.append(f"{pronoun} shares {possessive} {item} equally with {parts - 1} friends "
                                 f"and keeps one share.")
        sentences.append(f"How many {item} does {name} have now?")
        return Problem(prompt=" ".join(sentences) + "\nAnswer:", answer=str(count),
                       metadata={"num_steps": self.num_steps})
