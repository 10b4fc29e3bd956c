"""Integer arithmetic with verifiable answers: the default task."""

from __future__ import annotations

import numpy as np

from covgym.envs.base import Problem, SingleTurnEnv

_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class ArithmeticEnv(SingleTurnEnv):
    """Evaluate an integer expression such as ``7+8-2`` (defaults: 3 one-digit terms, ``+`` and ``-``).

    ## Description
    Procedurally generated expressions of ``num_terms`` operands with up to ``digits`` digits, joined by
    operations from ``operations`` (``+``, ``-``, ``*``), evaluated left to right with usual precedence.

    ## Observation
    A prompt ``"Compute: 7+8-2\\nAnswer:"`` followed by the optional ``instruction``.

    ## Action
    Free text; the final answer is the last ``\\boxed{}`` or else the last number in it.

    ## Rewards
    1 if the final answer equals the value, else ``format_reward`` if a ``\\boxed{}`` answer is present, else 0.

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, digits: int = 1, operations: str = "+-", num_terms: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        if digits < 1 or digits > 12:
            raise ValueError(f"digits must be in 1..12, got {digits}")
        if num_terms < 2:
            raise ValueError(f"num_terms must be >= 2, got {num_terms}")
        unknown = set(operations) - set(_OPERATIONS)
        if not operations or unknown:
            raise ValueError(f"operations must be a non-empty string over '+-*', got {operations!r}")
        self.digits, self.operations, self.num_terms = digits, operations, num_terms

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        high = 10**self.digits
        terms = [str(int(rng.integers(0, high))) for _ in range(self.num_terms)]
        ops = [self.operations[int(rng.integers(0, len(self.operations)))] for _ in range(self.num_terms - 1)]
        expression = terms[0] + "".join(op + term for op, term in zip(ops, terms[1:]))
        value = _evaluate(terms, ops)
        return Problem(prompt=f"Compute: {expression}\nAnswer:", answer=str(value),
                       metadata={"expression": expression})


def _evaluate(terms: list[str], ops: list[str]) -> int:
    """Exact value with ``*`` before ``+``/``-``, computed from the parts (no ``eval``)."""
    products: list[int] = [int(terms[0])]
    signs: list[int] = [1]
    for op, term in zip(ops, terms[1:]):
        if op == "*":
            products[-1] *= int(term)
        else:
            products.append(int(term))
            signs.append(1 if op == "+" else -1)
    return sum(sign * product for sign, product in zip(signs, products))
