"""Countdown: reach a target number by combining given numbers with + - * /."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

import numpy as np

from covgym.envs.base import Problem, SingleTurnEnv
from covgym.envs.grading import MAX_RESPONSE_CHARS, Grade
from covgym.envs.safe_math import evaluate

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def candidate_expressions(response: str) -> list[str]:
    """What a response offers as its expression: the last ``<answer>`` block, else its last non-empty line;
    split at ``=`` so that ``3*8 = 24`` offers ``3*8`` (and ``24``)."""
    tagged = _ANSWER_TAG.findall(response)
    if tagged:
        text = tagged[-1]
    else:
        lines = [line for line in response.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    return [part.strip() for part in text.split("=") if part.strip()]


class CountdownEnv(SingleTurnEnv):
    """Combine the given numbers with ``+ - * /`` and parentheses to make the target.

    ## Description
    ``num_numbers`` numbers drawn from ``1..max_number``; the target is the value of a random expression over
    all of them with positive integer intermediate results, in ``1..max_target``, so every problem is solvable.
    With ``use_all=True`` (default, as in TinyZero) each number must be used exactly once; otherwise at most once.

    ## Observation
    ``"Make 24 from 3, 7, 8, 2 with + - * / (each number once).\\nAnswer:"`` plus the optional ``instruction``.

    ## Action
    An expression, in the last ``<answer>...</answer>`` block or else on the last non-empty line; ``3*8 = 24``
    is accepted. It is checked by a bounded parser (``covgym.envs.safe_math``), never evaluated as code.

    ## Rewards
    1 if the expression uses the allowed numbers and equals the target exactly, else ``format_reward`` if the
    expression parses, else 0.

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, num_numbers: int = 4, max_number: int = 20, max_target: int = 100, use_all: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 2 <= num_numbers <= 6:
            raise ValueError(f"num_numbers must be in 2..6, got {num_numbers}")
        if not 2 <= max_number <= 1000:
            raise ValueError(f"max_number must be in 2..1000, got {max_number}")
        if not 10 <= max_target <= 100_000:
            raise ValueError(f"max_target must be in 10..100000, got {max_target}")
        self.num_numbers, self.max_number, self.max_target, self.use_all = \
            num_numbers, max_number, max_target, use_all

    def _combine(self, rng: np.random.Generator, numbers: list[int]) -> tuple[str, int] | None:
        """A random expression over all ``numbers`` with positive integer intermediate values, or None."""
        items = [(str(n), n) for n in numbers]
        while len(items) > 1:
            i, j = (int(k) for k in rng.choice(len(items), size=2, replace=False))
            (left_text, left), (right_text, right) = items[i], items[j]
            options = [("+", left + right), ("*", left * right)]
            if left > right:
                options.append(("-", left - right))
            if left % right == 0 and right > 1:
                options.append(("/", left // right))
            operator, value = options[int(rng.integers(0, len(options)))]
            if value > 10 * self.max_target:
                return None
            items = [item for k, item in enumerate(items) if k not in (i, j)] + \
                [(f"({left_text} {operator} {right_text})", value)]
        text, value = items[0]
        return (text[1:-1] if text.startswith("(") else text), value

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        while True:
            numbers = [int(n) for n in rng.integers(1, self.max_number + 1, size=self.num_numbers)]
            combined = self._combine(rng, numbers)
            if combined is not None and 1 <= combined[1] <= self.max_target:
                expression, target = combined
                break
        rule = "each number once" if self.use_all else "each number at most once"
        prompt = f"Make {target} from {', '.join(map(str, numbers))} with + - * / ({rule}).\nAnswer:"
        return Problem(prompt=prompt, answer=expression, metadata={"numbers": numbers, "target": target})

    def oracle_action(self) -> str:
        return self.problem.answer  # type: ignore[union-attr]

    def grade(self, response: str, problem: Problem) -> Grade:
        if len(response) > MAX_RESPONSE_CHARS:
            return Grade(False, None, f"response longer than {MAX_RESPONSE_CHARS} characters")
        target, available = problem.metadata["target"], Counter(problem.metadata["numbers"])
        parsed, reasons = False, []
        for candidate in candidate_expressions(response):
            try:
                evaluation = evaluate(candidate, allow_power=False, allow_decimals=False)
            except ValueError as error:
                reasons.append(str(error))
                continue
            parsed = True
            used = Counter(evaluation.numbers)
            if used - available:
                reasons.append("uses numbers that are not given (or too often)")
            elif self.use_all and used != available:
                reasons.append("does not use every number")
            elif evaluation.value != Fraction(target):
                reasons.append(f"equals {evaluation.value}, not {target}")
            else:
                return Grade(True, candidate, "reaches the target", True)
        return Grade(False, None, "; ".join(reasons) or "no expression found", parsed)
