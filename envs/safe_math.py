"""A small, bounded arithmetic parser for model-written expressions (Countdown answers, calculator calls).

Model output is never given to ``eval``: this recursive-descent parser knows numbers, ``+ - * /``, optional
``^``/``**`` with small integer exponents, and parentheses, computes exactly with ``Fraction``, and refuses
anything large (text length, nesting, digits, the size of any intermediate value) with ``ExpressionError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPRESSION_CHARS = 256
MAX_DEPTH = 32
MAX_NUMBER_DIGITS = 30
MAX_EXPONENT = 64
#: Largest bit length of any numerator or denominator met while evaluating.
MAX_VALUE_BITS = 1024
_ALIASES = {"x": "*", "×": "*", "÷": "/", "**": "^"}
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|(\*\*|[-+*/^()x×÷]))")


class ExpressionError(ValueError):
    """The text is not a valid, small enough expression; the message says why."""


@dataclass(frozen=True)
class Evaluation:
    """An expression's exact value and the integer literals it used, in order."""

    value: Fraction
    numbers: tuple[int, ...]


def format_number(value: Fraction) -> str:
    """``14`` for integers, ``7/2`` otherwise."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected character {ascii(text[position])} at {position}")
        number, operator = match.groups()
        if number is not None and len(number) > MAX_NUMBER_DIGITS:
            raise ExpressionError(f"number longer than {MAX_NUMBER_DIGITS} digits")
        tokens.append(number if number is not None else _ALIASES.get(operator, operator))
        position = match.end()
    return tokens


class _Parser:
    """expression := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*;
    unary := ('+'|'-') unary | power; power := atom ('^' unary)?; atom := number | '(' expression ')'."""

    def __init__(self, tokens: list[str], allow_power: bool, allow_decimals: bool) -> None:
        self.tokens, self.index, self.depth = tokens, 0, 0
        self.allow_power, self.allow_decimals = allow_power, allow_decimals
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends too early")
        self.index += 1
        return token

    def expression(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = _checked(value + self.term() if self.take() == "+" else value - self.term())
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            operator = self.take()
            right = self.unary()
            if operator == "/" and right == 0:
                raise ExpressionError("division by zero")
            value = _checked(value * right if operator == "*" else value / right)
        return value

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() != "^":
            return base
        if not self.allow_power:
            raise ExpressionError("powers are not allowed")
        self.take()
        exponent = self.unary()
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
            raise ExpressionError(f"exponent must be an integer of size at most {MAX_EXPONENT}")
        if base == 0 and exponent < 0:
            raise ExpressionError("division by zero")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits * abs(int(exponent)) > MAX_VALUE_BITS:
            raise ExpressionError("value too large")
        return _checked(base ** int(exponent))

    def unary(self) -> Fraction:
        if self.peek() in ("+", "-"):
            sign = self.take()
            value = self.nested(self.unary)
            return -value if sign == "-" else value
        return self.power()

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            value = self.nested(self.expression)
            if self.take() != ")":
                raise ExpressionError("missing ')'")
            return value
        if token[0].isdigit():
            if "." in token:
                if not self.allow_decimals:
                    raise ExpressionError("decimals are not allowed")
            else:
                self.numbers.append(int(token))
            return Fraction(token)
        raise ExpressionError(f"unexpected {token!r}")

    def nested(self, rule):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH}")
        try:
            return rule()
        finally:
            self.depth -= 1


def _checked(value: Fraction) -> Fraction:
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > MAX_VALUE_BITS:
        raise ExpressionError("value too large")
    return value


def evaluate(text: str, allow_power: bool = True, allow_decimals: bool = True) -> Evaluation:
    """Exact value of an arithmetic expression; raises ``ExpressionError`` (a ``ValueError``) for anything else."""
    if not isinstance(text, str):
        raise ExpressionError("expression is not a string")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        raise ExpressionError("empty expression")
    parser = _Parser(tokens, allow_power, allow_decimals)
    value = parser.expression()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r} after the expression")
    return Evaluation(value, tuple(parser.numbers))
