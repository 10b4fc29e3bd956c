"""Graders: total functions from (gold answer, model response) to a verdict. They never raise.

A fast exact path handles plain numbers; everything else goes to math-verify, with the gold answer as the first
argument of ``verify`` (it is asymmetric). Input is capped in length and nothing is evaluated as code.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction

MAX_RESPONSE_CHARS = 4096
MAX_ANSWER_CHARS = 512
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_PLAIN_NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?(?:/\d+)?\s*$")


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


def extract_final_answer(text: str) -> str | None:
    """The answer a response commits to: the last ``\\boxed{}``, else the last plain number."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def parse_number(text: str) -> Fraction | None:
    """Exact value of a plain integer, decimal or ``p/q`` string, else None."""
    if not _PLAIN_NUMBER.match(text or ""):
        return None
    try:
        return Fraction(text.strip().replace(" ", ""))
    except (ValueError, ZeroDivisionError):
        return None


def _math_verify(gold: str, candidate: str) -> bool:
    """math-verify comparison; its signal-based timeout only works in the main thread, so elsewhere it is off."""
    try:
        from math_verify import parse, verify

        in_main = threading.current_thread() is threading.main_thread()
        timeout = 5 if in_main else None
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        answer_parsed = parse(f"${candidate}$", parsing_timeout=timeout)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=timeout))
    except BaseException as error:  # math-verify's TimeoutException derives from BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def grade_math(gold: str, response: str) -> Grade:
    """Grade a free-form math response against ``gold``. Total: never raises, bounded input."""
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
    gold_value, answer_value = parse_number(gold), parse_number(extracted)
    if gold_value is not None and answer_value is not None:
        correct = gold_value == answer_value
        return Grade(correct, extracted, "exact numeric match" if correct else "numeric mismatch", has_format)
    correct = _math_verify(gold, extracted)
    return Grade(correct, extracted, "math-verify equivalent" if correct else "math-verify not equivalent",
                 has_format)
