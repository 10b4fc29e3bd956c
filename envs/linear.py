"""Linear equations in one unknown and small linear systems, generated and solved with sympy."""

from __future__ import annotations

import re

import numpy as np
import sympy

from covgym.envs.base import Problem, SingleTurnEnv
from covgym.envs.grading import MAX_RESPONSE_CHARS, Grade, extract_boxed, parse_number
from covgym.envs.safe_math import format_number

_VARIABLES = "xyz"
_ASSIGNMENT = re.compile(r"\b([xyz])\s*=\s*(-?\d+(?:\.\d+)?(?:/\d+)?)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def _linear_text(coefficients: list[int], names: str, constant: int = 0) -> str:
    """``3x - y + 2`` from coefficients (zero terms dropped, unit coefficients written bare)."""
    parts: list[str] = []
    for coefficient, name in zip(coefficients, names):
        if coefficient == 0:
            continue
        size = abs(coefficient)
        term = f"{'' if size == 1 else size}{name}"
        parts.append(("-" if coefficient < 0 else "+") + term)
    if constant or not parts:
        parts.append(("-" if constant < 0 else "+") + str(abs(constant)))
    text = " ".join(f"{part[0]} {part[1:]}" for part in parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


class LinearEquationEnv(SingleTurnEnv):
    """Solve ``a x + b = c x + d`` (``num_unknowns=1``) or a system of 2 or 3 linear equations.

    ## Description
    Integer solutions in ``[-solution_range, solution_range]``, integer coefficients in
    ``[-coefficient_range, coefficient_range]``; systems have a nonzero determinant (a unique solution) and the
    gold solution comes from ``sympy.linsolve``.

    ## Observation
    ``"Solve: 3x + 5 = x - 7\\nAnswer: x ="`` or ``"Solve: 2x + 3y = 7, x - y = 1\\nAnswer:"``, plus the
    optional ``instruction``.

    ## Action
    Free text. One unknown: the last ``\\boxed{}`` or number. Systems: the last ``x = ...``, ``y = ...``
    (``z``) assignments, else the last ``num_unknowns`` numbers in the order x, y, z (e.g. ``(2, 1)``).

    ## Rewards
    1 if every unknown's value is exactly right, else ``format_reward`` if a ``\\boxed{}`` is present, else 0.

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, num_unknowns: int = 1, coefficient_range: int = 9, solution_range: int = 10,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= num_unknowns <= 3:
            raise ValueError(f"num_unknowns must be in 1..3, got {num_unknowns}")
        if not 2 <= coefficient_range <= 100:
            raise ValueError(f"coefficient_range must be in 2..100, got {coefficient_range}")
        if not 1 <= solution_range <= 1000:
            raise ValueError(f"solution_range must be in 1..1000, got {solution_range}")
        self.num_unknowns, self.coefficient_range, self.solution_range = \
            num_unknowns, coefficient_range, solution_range

    def _integer(self, rng: np.random.Generator, bound: int, nonzero: bool = False) -> int:
        while True:
            value = int(rng.integers(-bound, bound + 1))
            if value or not nonzero:
                return value

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        if self.num_unknowns == 1:
            return self._single(rng)
        return self._system(rng)

    def _single(self, rng: np.random.Generator) -> Problem:
        c = self.coefficient_range
        solution = self._integer(rng, self.solution_range)
        left, right = self._integer(rng, c, nonzero=True), self._integer(rng, c)
        while right == left:
            right = self._integer(rng, c)
        right_constant = self._integer(rng, c * self.solution_range)
        left_constant = (right - left) * solution + right_constant
        x = sympy.Symbol("x")
        roots = sympy.solve(sympy.Eq(left * x + left_constant, right * x + right_constant), x)
        equation = f"{_linear_text([left], 'x', left_constant)} = {_linear_text([right], 'x', right_constant)}"
        return Problem(prompt=f"Solve: {equation}\nAnswer: x =", answer=format_number(sympy.Rational(roots[0])),
                       metadata={"equations": [equation]})

    def _system(self, rng: np.random.Generator) -> Problem:
        n, names = self.num_unknowns, _VARIABLES[: self.num_unknowns]
        symbols = sympy.symbols(list(names))
        while True:
            matrix = sympy.Matrix(n, n, lambda *_: self._integer(rng, self.coefficient_range))
            if matrix.det() != 0:
                break
        solution = sympy.Matrix([self._integer(rng, self.solution_range) for _ in range(n)])
        rhs = matrix * solution
        equations = [f"{_linear_text([int(v) for v in matrix.row(i)], names)} = {int(rhs[i])}" for i in range(n)]
        (solved,) = sympy.linsolve((matrix, rhs), symbols)
        answer = ", ".join(f"{name}={format_number(sympy.Rational(value))}" for name, value in zip(names, solved))
        return Problem(prompt=f"Solve: {', '.join(equations)}\nAnswer:", answer=answer,
                       metadata={"equations": equations})

    def grade(self, response: str, problem: Problem) -> Grade:
        if self.num_unknowns == 1:
            return super().grade(response, problem)
        if len(response) > MAX_RESPONSE_CHARS:
            return Grade(False, None, f"response longer than {MAX_RESPONSE_CHARS} characters")
        has_format = extract_boxed(response) is not None
        gold = dict(item.split("=") for item in problem.answer.split(", "))
        assigned = dict(_ASSIGNMENT.findall(response))
        if set(gold) <= set(assigned):
            values = [assigned[name] for name in gold]
        else:
            numbers = _NUMBER.findall(response)
            if len(numbers) < len(gold):
                return Grade(False, None, "no solution found", has_format)
            values = numbers[-len(gold):]
        extracted = ", ".join(f"{name}={value}" for name, value in zip(gold, values))
        correct = all(parse_number(value) == parse_number(gold[name]) for name, value in zip(gold, values))
        return Grade(correct, extracted, "exact match" if correct else "wrong value", has_format)


class LinearSystemEnv(LinearEquationEnv):
    """``LinearEquationEnv`` with ``num_unknowns=2`` by default (see there)."""

    def __init__(self, num_unknowns: int = 2, **kwargs) -> None:
        super().__init__(num_unknowns=num_unknowns, **kwargs)


LinearSystemEnv.__doc__ = f"{LinearSystemEnv.__doc__}\n\n    {LinearEquationEnv.__doc__}"
