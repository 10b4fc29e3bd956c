"""Tool use: a multi-turn arithmetic task with a calculator the policy calls through tags."""

from __future__ import annotations

import re

import numpy as np

from covgym.envs.arithmetic import ArithmeticEnv
from covgym.envs.base import MultiTurnEnv, Problem, Turn
from covgym.envs.grading import grade_math
from covgym.envs.safe_math import evaluate, format_number

_CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
INSTRUCTION = "Use <calc>expr</calc> to calculate, then give <answer>number</answer>.\n"


class CalculatorEnv(MultiTurnEnv):
    """Compute an arithmetic expression, optionally calling a calculator tool first.

    ## Description
    The problem is an ``ArithmeticEnv`` expression (knobs ``digits``, ``num_terms``, ``operations``), harder by
    default (3 terms of 3 digits with ``*``). Each turn the policy either calls the tool,
    ``<calc>2*(3+4)</calc>``, and the env replies ``<result>14</result>`` (numbers, ``+ - * / ^`` and
    parentheses, exact rational results such as ``7/2``; bad or oversized expressions give
    ``<result>error: ...</result>``; the expression is parsed by ``covgym.envs.safe_math``, never executed), or
    it answers, ``<answer>14</answer>``. Generation of a turn stops at ``</calc>`` or ``</answer>``
    (``stop_strings``).

    ## Observation
    First the prompt ``"Use <calc>expr</calc> to calculate, then give <answer>number</answer>.\\nCompute:
    347*29+118\\n"``, then after each tool call ``"\\n<result>...</result>\\n"``.

    ## Action
    One turn of text. An ``<answer>`` block ends the episode and is graded; otherwise the first complete
    ``<calc>`` block is a tool call; otherwise the turn is a final answer graded by its last number (unless
    ``answer_tag_required=True``, in which case it scores 0).

    ## Rewards
    1 for a correct final answer, 0 for a wrong one, minus ``call_cost`` for every tool call. The episode
    reward lies in ``[-call_cost * max_turns, 1]`` (``reward_range``).

    ## Episode End
    Terminated by a final answer; truncated after ``max_turns`` turns (then ``info["correct"]`` is False).

    ## Version History
    - v0: first version.
    """

    stop_strings = ("</calc>", "</answer>")

    def __init__(self, digits: int = 3, num_terms: int = 3, operations: str = "+-*", max_turns: int = 4,
                 call_cost: float = 0.0, answer_tag_required: bool = False, **kwargs) -> None:
        super().__init__(max_turns=max_turns, **kwargs)
        if not 0.0 <= call_cost <= 1.0:
            raise ValueError(f"call_cost must be in [0, 1], got {call_cost}")
        self.expressions = ArithmeticEnv(digits=digits, operations=operations, num_terms=num_terms)
        self.call_cost, self.answer_tag_required = float(call_cost), answer_tag_required
        self.reward_range = (-self.call_cost * self.max_turns, 1.0)
        self.calls = 0

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        base = self.expressions.generate_problem(rng)
        expression = base.metadata["expression"]
        return Problem(prompt=f"{INSTRUCTION}Compute: {expression}\n", answer=base.answer,
                       metadata={"expression": expression})

    def oracle_action(self) -> str:
        return f"<answer>{self.problem.answer}</answer>"  # type: ignore[union-attr]

    def start_episode(self, problem: Problem) -> None:
        self.calls = 0

    def take_turn(self, action: str) -> Turn:
        answers = _ANSWER.findall(action)
        call = _CALL.search(action)
        if not answers and call is not None:
            self.calls += 1
            try:
                result = format_number(evaluate(call.group(1)).value)
            except ValueError as error:
                result = f"error: {error}"
            return Turn(f"\n<result>{result}</result>\n", reward=-self.call_cost,
                        info={"tool_call": True, "calls": self.calls})
        if answers:
            response = answers[-1]
        elif self.answer_tag_required:
            return Turn("", done=True, info={"reason": "no <answer> tag", "calls": self.calls})
        else:
            response = action
        grade = grade_math(self.problem.answer, response)  # type: ignore[union-attr]
        return Turn("", reward=1.0 if grade.correct else 0.0, done=True, correct=grade.correct,
                    info={"extracted": grade.extracted, "reason": grade.reason, "calls": self.calls})
