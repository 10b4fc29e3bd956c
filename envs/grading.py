"""Graders: total functions from (gold answer, model response) to a verdict. They never raise.

A fast exact path handles plain numbers (integers, decimals, ``p/q``, ``\\frac{p}{q}``, thousands separators);
everything else goes to math-verify in a worker process with a hard time bound (``covgym.envs.verify_pool``),
with the gold answer as the first argument of ``verify`` (it is asymmetric). Input is capped in length and
nothing is evaluated as code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from covgym.envs.verify_pool import POOL

MAX_RESPONSE_CHARS = 4096
MAX_ANSWER_CHARS = 512
_NUMBER_TEXT = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?"
_NUMBER = re.compile(_NUMBER_TEXT)
_PLAIN_NUMBER = re.compile(rf"^\s*{_NUMBER_TEXT}\s*$")
_LATEX_FRACTION = re.compile(r"^\s*(-?)\s*\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}\s*$")
_DECORATION = re.compile(r"^\s*(?:\\\$|\$)?\s*|\s*\.?\s*$")


@dataclass(frozen=True)
class Grade:
    """A verdict: whether the response is correct, what was extracted, and why (for ``info``)."""

    correct: bool
    extracted: str | None
    reason: str
    has_format: bool = False


def extract_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[begin:index]
            depth -= 1
    return None


def extract_last_number(text: str) -> str | None:
    """The last plain number in ``text`` (``1,234`` and ``-3/4`` count as one number), or None."""
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_final_answer(text: str) -> str | None:
    """The answer a response commits to: the last ``\\boxed{}``, else the last plain number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    return extract_last_number(text)


def parse_number(text: str | None) -> Fraction | None:
    """Exact value of a plain number (``12``, ``-1,234.5``, ``3/4``, ``\\frac{3}{4}``, ``$12``), else None."""
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    stripped = _DECORATION.sub("", text)
    fraction = _LATEX_FRACTION.match(stripped)
    if fraction:
        sign, numerator, denominator = fraction.groups()
        if int(denominator) == 0:
            return None
        value = Fraction(int(numerator), int(denominator))
        return -value if sign else value
    if not _PLAIN_NUMBER.match(stripped):
        return None
    try:
        return Fraction(stripped.strip().replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def equivalent(gold: str, candidate: str, timeout_s: float | None = None) -> tuple[bool, str]:
    """Whether ``candidate`` equals ``gold``: exact for numbers, else math-verify (bounded). Never raises."""
    gold_value, candidate_value = parse_number(gold), parse_number(candidate)
    if gold_value is not None and candidate_value is not None:
        equal = gold_value == candidate_value
        return equal, "exact numeric match" if equal else "numeric mismatch"
    if len(gold) > MAX_ANSWER_CHARS or len(candidate) > MAX_ANSWER_CHARS:
        return False, "answer too long for math-verify"
    return POOL.equal(gold, candidate, timeout_s)


def grade_math(gold: str, response: str, timeout_s: float | None = None) -> Grade:
    """Grade a free-form math response against ``gold``. Total: never raises, bounded input and time."""
    if not isinstance(response, str):
        return Grade(False, None, "response is not a string")
    if len(response) > MAX_RESPONSE_CHARS:
        return Grade(False, None, f"response longer than {MAX_RESPONSE_CHARS} characters")
    has_format = extract_boxed(response) is not None
    extracted = extract_final_answer(response)
    if extracted is None:
        return Grade(False, None, "no answer found", has_format)
    if len(extracted) > MAX_ANSWER_CHARS:
        return Grade(False, None, "extracted answer too long", has_format)
    correct, reason = equivalent(str(gold), extracted, timeout_s)
    return Grade(correct, extracted, reason, has_format)
