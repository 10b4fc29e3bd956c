"""Exact arithmetic on fractions and on decimals."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from covgym.envs.base import Problem, SingleTurnEnv
from covgym.envs.safe_math import evaluate, format_number


def decimal_text(value: Fraction) -> str | None:
    """``value`` as a finite decimal (``-4.27``), or None when it has no finite decimal expansion."""
    denominator, places = value.denominator, 0
    while denominator % 10 == 0 or denominator % 2 == 0 or denominator % 5 == 0:
        if denominator % 10 == 0:
            denominator //= 10
        elif denominator % 2 == 0:
            denominator //= 2
        else:
            denominator //= 5
        places += 1
    if denominator != 1:
        return None
    scaled = abs(value) * 10**places
    text = str(int(scaled)).rjust(places + 1, "0")
    whole, fraction = text[: len(text) - places] or "0", text[len(text) - places:]
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{fraction}".rstrip("0").rstrip(".") if places else f"{sign}{whole}"


class FractionsEnv(SingleTurnEnv):
    """Add, subtract, multiply and divide fractions (``mode="fraction"``) or decimals (``mode="decimal"``).

    ## Description
    ``num_terms`` operands joined by operations from ``operations`` (``+ - * /``), usual precedence. Fractions
    are proper or improper with denominators up to ``max_denominator``, written in parentheses so that
    ``(3/4) / (5/6)`` is unambiguous; decimals have up to ``decimal_places`` places and integer part below
    ``10**digits``. Decimal problems only use operations whose result has a finite decimal expansion.

    ## Observation
    ``"Compute: (3/4) + (5/6)\\nAnswer:"`` (or ``"Compute: 2.35 * 1.2\\nAnswer:"``) plus the optional ``instruction``.

    ## Action
    Free text; the final answer is the last ``\\boxed{}`` or else the last number; ``19/12``, ``\\frac{19}{12}``
    and ``1.58`` style answers are compared exactly (so ``1.583`` is not ``19/12``).

    ## Rewards
    1 if the answer equals the exact value, else ``format_reward`` if a ``\\boxed{}`` answer is present, else 0.

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, mode: str = "fraction", num_terms: int = 2, operations: str = "+-*/",
                 max_denominator: int = 12, decimal_places: int = 2, digits: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("fraction", "decimal"):
            raise ValueError(f"mode must be 'fraction' or 'decimal', got {mode!r}")
        if not 2 <= num_terms <= 6:
            raise ValueError(f"num_terms must be in 2..6, got {num_terms}")
        if not operations or set(operations) - set("+-*/"):
            raise ValueError(f"operations must be a non-empty string over '+-*/', got {operations!r}")
        if not 2 <= max_denominator <= 1000:
            raise ValueError(f"max_denominator must be in 2..1000, got {max_denominator}")
        if not 1 <= decimal_places <= 4:
            raise ValueError(f"decimal_places must be in 1..4, got {decimal_places}")
        if not 1 <= digits <= 6:
            raise ValueError(f"digits must be in 1..6, got {digits}")
        self.mode, self.num_terms, self.operations = mode, num_terms, operations
        self.max_denominator, self.decimal_places, self.digits = max_denominator, decimal_places, digits

    def _operand(self, rng: np.random.Generator) -> str:
        if self.mode == "fraction":
            denominator = int(rng.integers(2, self.max_denominator + 1))
            numerator = int(rng.integers(1, 2 * denominator))
            return f"({numerator}/{denominator})"
        places = int(rng.integers(1, self.decimal_places + 1))
        whole = int(rng.integers(0, 10**self.digits))
        fraction = int(rng.integers(1, 10**places))
        return f"{whole}.{str(fraction).rjust(places, '0')}"

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        for _ in range(1000):
            operands = [self._operand(rng) for _ in range(self.num_terms)]
            ops = [self.operations[int(rng.integers(0, len(self.operations)))] for _ in range(self.num_terms - 1)]
            expression = operands[0] + "".join(f" {op} {operand}" for op, operand in zip(ops, operands[1:]))
            try:
                value = evaluate(expression).value
            except ValueError:  # a zero divisor: draw again
                continue
            answer = format_number(value) if self.mode == "fraction" else decimal_text(value)
            if answer is not None:
                return Problem(prompt=f"Compute: {expression}\nAnswer:", answer=answer,
                               metadata={"expression": expression})
        raise RuntimeError("no problem with a finite decimal answer in 1000 draws; allow fewer '/' operations")


class DecimalsEnv(FractionsEnv):
    """``FractionsEnv`` with ``mode="decimal"`` and ``+ - *`` by default (see there)."""

    def __init__(self, mode: str = "decimal", operations: str = "+-*", **kwargs) -> None:
        super().__init__(mode=mode, operations=operations, **kwargs)


DecimalsEnv.__doc__ = f"{DecimalsEnv.__doc__}\n\n    {FractionsEnv.__doc__}"
