"""Graders and the safe expression parser: exact against references, total, bounded in time in any thread."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.envs import grading, verify_pool
from covgym.envs.grading import extract_boxed, extract_final_answer, grade_math, parse_number
from covgym.envs.safe_math import MAX_VALUE_BITS, ExpressionError, evaluate, format_number

TIMEOUT_S = 1.0
#: A comparison may also have to start a worker (import math-verify) when the last one was killed.
SLACK_S = 8.0


@pytest.fixture(autouse=True)
def short_verify_timeout(monkeypatch):
    monkeypatch.setattr(verify_pool, "DEFAULT_TIMEOUT_S", TIMEOUT_S)


# ----------------------------------------------------------------- extraction and exact numbers
@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{42}.", "42"), ("\\boxed{\\frac{1}{2}} and \\boxed{7}", "7"), ("\\boxed{{a}{b}}", "{a}{b}"),
    ("\\boxed{unclosed", None), ("no box", None)])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("The answer is 1,234.", "1,234"), ("x = -3/4", "-3/4"), ("2 then 3.5", "3.5"), ("\\boxed{x+1} 7", "x+1"),
    ("nothing", None)])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@given(numerator=st.integers(-10**6, 10**6), denominator=st.integers(1, 10**4))
@settings(deadline=None, max_examples=60)
def test_parse_number_forms_agree_with_fraction(numerator, denominator):
    value = Fraction(numerator, denominator)
    assert parse_number(f"{numerator}/{denominator}") == value
    sign = "-" if numerator < 0 else ""
    assert parse_number(f"{sign}\\frac{{{abs(numerator)}}}{{{denominator}}}") == value
    assert parse_number(f"${numerator:,}") == numerator
    assert parse_number(f"{numerator}.") == numerator


@pytest.mark.parametrize("text", ["1/0", "1e5", "twelve", "1,23", "--1", "", "\\frac{1}{0}"])
def test_parse_number_rejects_non_numbers(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("gold,response,correct", [
    ("72", "Natalia sold 72 clips.", True), ("72", "\\boxed{72.0}", True), ("1000", "so 1,000", True),
    ("19/12", "\\boxed{\\frac{19}{12}}", True), ("0.5", "\\boxed{\\frac{1}{2}}", True),
    ("19/12", "1.583", False), ("72", "\\boxed{71}", False), ("72", "", False),
    ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", True), ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}", True),
    ("x+1", "\\boxed{1+x}", True), ("x+1", "\\boxed{x-1}", False)])
def test_grade_math_known_cases(gold, response, correct):
    assert grade_math(gold, response).correct is correct


def test_grade_math_format_flag_and_caps():
    assert grade_math("3", "\\boxed{4}").has_format and not grade_math("3", "4").has_format
    assert not grade_math("3", "3" * (grading.MAX_RESPONSE_CHARS + 1)).correct
    assert grade_math("3", None).reason == "response is not a string"  # type: ignore[arg-type]


# ----------------------------------------------------------------- bounded time, any thread
TOWER = "\\boxed{9^{9^{9^9}}}"


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def test_power_tower_is_cut_off_at_the_timeout_in_the_main_thread():
    grade_math("2", "\\boxed{\\sqrt{4}}")  # warm a worker
    grade, seconds = _timed(grade_math, "5", TOWER)
    assert not grade.correct and seconds < TIMEOUT_S + 1.0
    assert "killed" in grade.reason or "not equivalent" in grade.reason


def test_power_tower_is_cut_off_in_a_worker_thread():
    results: list = []
    thread = threading.Thread(target=lambda: results.append(_timed(grade_math, "7", TOWER + " ")))
    thread.start()
    thread.join(timeout=TIMEOUT_S + SLACK_S + 5)
    assert not thread.is_alive() and results
    grade, seconds = results[0]
    assert not grade.correct and seconds < TIMEOUT_S + SLACK_S


def test_the_pool_recovers_after_a_kill():
    grade_math("11", "\\boxed{9^{9^{9^{9^9}}}}")
    assert grade_math("\\frac{\\sqrt{3}}{3}", "\\boxed{\\frac{1}{\\sqrt{3}}}").correct


def test_math_verifys_own_timeout_is_no_verdict_and_marks_the_deadline():
    """math-verify's whole-second bound can fire before ours; it answers "no match", which must not count as
    graded (nor be cached as a verdict)."""
    grade_math("2", "\\boxed{\\sqrt{4}}")  # warm a worker
    bomb = "8^{8^{8^{8}}}"
    with verify_pool.grading_deadline(time.monotonic() + 30) as deadline:
        equal, reason = verify_pool.POOL.equal("3", bomb, timeout_s=2.6)  # its own bound: int(2.6) = 2 s
    assert not equal and deadline.timed_out, reason
    assert "timed out" in reason or "no answer" in reason
    with verify_pool.grading_deadline(time.monotonic() + 30) as again:  # answered from the cache: still a timeout
        verify_pool.POOL.equal("3", bomb, timeout_s=2.6)
    assert again.timed_out


def test_a_deadline_that_has_passed_answers_at_once_without_a_verdict():
    with verify_pool.grading_deadline(time.monotonic() - 1) as deadline:
        (equal, reason), seconds = _timed(verify_pool.POOL.equal, "1/3", "\\frac{2}{6} + 0")
    assert not equal and deadline.timed_out and "deadline" in reason and seconds < 0.1
    assert grade_math("1/3", "\\boxed{\\frac{2}{6} + 0}").correct  # not cached: judged once there is time


def test_many_threads_grade_at_once():
    golds = ["\\frac{1}{2}", "\\sqrt{2}", "x^2", "3\\pi"]
    answers = ["\\boxed{0.5}", "\\boxed{2^{1/2}}", "\\boxed{x \\cdot x}", "\\boxed{\\pi+2\\pi}"]
    results: dict[int, bool] = {}

    def work(index: int) -> None:
        results[index] = grade_math(golds[index % 4], answers[index % 4]).correct

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {index: True for index in range(8)}


# ----------------------------------------------------------------- hostile text through the graders
HOSTILE = ["", " ", "\x00\x01\x02" * 50, "a" * 100_000, "\\boxed{" + "{" * 3000, "}" * 3000, TOWER,
           "\\boxed{" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "}", "\\boxed{10^{10^{10^{10}}}!}",
           "\\boxed{__import__('os').system('echo hacked')}", "__import__('os').system('echo hacked')",
           "\\boxed{\\def\\x{\\x}\\x}", "\\boxed{\\input{/etc/passwd}}", "\\boxed{" + "9" * 5000 + "}",
           "𝟙𝟚𝟛 \u202e 12 \ud800", "\\boxed{\\begin{pmatrix}" + "1&" * 500 + "1\\end{pmatrix}}",
           "\\boxed{x=\\int_0^\\infty e^{-x^{99999}}dx}", "\\boxed{(" * 400 + "1" + ")}" * 400]


@pytest.mark.parametrize("response", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_responses_are_graded_within_the_bound(response):
    grade, seconds = _timed(grade_math, "12", response)
    assert isinstance(grade.correct, bool) and isinstance(grade.reason, str)
    assert seconds < TIMEOUT_S + SLACK_S


@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")))
@settings(deadline=None, max_examples=60)
def test_grade_math_is_total_on_arbitrary_text(response):
    grade, seconds = _timed(grade_math, "3/4", response)
    assert isinstance(grade.correct, bool)
    assert seconds < TIMEOUT_S + SLACK_S


@given(st.text(alphabet="\\{}^_()0123456789+-*/=.,xy abcdfrqt", max_size=120))
@settings(deadline=None, max_examples=60)
def test_grade_math_is_total_on_latex_like_text(response):
    grade, seconds = _timed(grade_math, "\\frac{1}{2}", "\\boxed{" + response + "}")
    assert isinstance(grade.correct, bool)
    assert seconds < TIMEOUT_S + SLACK_S


# ----------------------------------------------------------------- the safe parser against a reference
def _expressions(depth: int = 3):
    """(text, exact value or None for invalid) built from a tree, so the value is known without parsing."""
    leaf = st.integers(0, 50).map(lambda n: (str(n), Fraction(n)))
    if depth == 0:
        return leaf

    def combine(parts):
        (left_text, left), operator, (right_text, right) = parts
        if left is None or right is None:
            return f"({left_text}){operator}({right_text})", None
        if operator == "/":
            value = None if right == 0 else left / right
        else:
            value = {"+": left + right, "-": left - right, "*": left * right}[operator]
        return f"({left_text}){operator}({right_text})", value

    sub = _expressions(depth - 1)
    return leaf | st.tuples(sub, st.sampled_from("+-*/"), sub).map(combine)


@given(_expressions())
@settings(deadline=None, max_examples=60)
def test_safe_parser_matches_the_tree_it_was_built_from(pair):
    text, value = pair
    if value is None:
        with pytest.raises(ExpressionError):
            evaluate(text)
    else:
        assert evaluate(text).value == value


@pytest.mark.parametrize("text,value", [("2*(3+4)", 14), ("-2^2", -4), ("2^-1", Fraction(1, 2)),
                                        ("2**10", 1024), ("7/2", Fraction(7, 2)), ("3 x 4", 12), ("1.5*2", 3)])
def test_safe_parser_hand_values(text, value):
    assert evaluate(text).value == value


@pytest.mark.parametrize("text", ["9^9^9", "10^64*10^64*10^64*10^64*10^64", "(" * 40 + "1" + ")" * 40, "1/0",
                                  "__import__('os')", "2+", "", "1" * 40, "x", "0^-1", "2^(1/2)", "1 2"])
def test_safe_parser_rejects_bad_or_huge_input(text):
    start = time.perf_counter()
    with pytest.raises(ExpressionError):
        evaluate(text)
    assert time.perf_counter() - start < 0.5


@given(st.text(max_size=300))
@settings(deadline=None, max_examples=60)
def test_safe_parser_is_total(text):
    try:
        result = evaluate(text)
    except ExpressionError:
        return
    assert max(result.value.numerator.bit_length(), result.value.denominator.bit_length()) <= MAX_VALUE_BITS


def test_format_number():
    assert format_number(Fraction(14)) == "14" and format_number(Fraction(-7, 2)) == "-7/2"
