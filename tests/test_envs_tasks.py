"""Task-specific checks: generated problems are right by an independent reference, graders and tools behave as
documented, knobs and errors work."""

from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal, getcontext
from fractions import Fraction

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import covgym  # noqa: F401
from covgym.envs.calculator import CalculatorEnv
from covgym.envs.countdown import CountdownEnv
from covgym.envs.dataset import DatasetEnv, gold_answer
from covgym.envs.guessing import NumberGuessEnv, binary_search_turns
from covgym.envs.linear import LinearEquationEnv
from covgym.envs.maze import MOVES, MazeEnv
from covgym.envs.rational import FractionsEnv, decimal_text
from covgym.envs.safe_math import evaluate
from covgym.envs.testing import always, oracle, run_episode
from covgym.envs.word_problems import WordProblemEnv


# ----------------------------------------------------------------- fractions and decimals
@given(st.integers(-10**6, 10**6), st.integers(0, 6), st.integers(0, 6), st.integers(1, 9))
@settings(deadline=None, max_examples=60)
def test_decimal_text_matches_decimal_division(numerator, twos, fives, other):
    value = Fraction(numerator, 2**twos * 5**fives * other)
    text = decimal_text(value)
    rest = value.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    if rest != 1:
        assert text is None
    else:
        getcontext().prec = 50
        assert Decimal(text) == Decimal(value.numerator) / Decimal(value.denominator)


@pytest.mark.parametrize("mode", ["fraction", "decimal"])
def test_fraction_answers_equal_a_left_to_right_reference(mode):
    env = FractionsEnv(mode=mode, num_terms=3, operations="+-*" if mode == "decimal" else "+-*/", split="all")
    for seed in range(30):
        _, info = env.reset(seed=seed)
        operands = [Fraction(term.strip("()")) for term in re.split(r" [-+*/] ", info["expression"])]
        operators = re.findall(r" ([-+*/]) ", info["expression"])
        # precedence by hand: fold * and / into the running product, then sum
        terms, signs = [operands[0]], [1]
        for operator, operand in zip(operators, operands[1:]):
            if operator in "*/":
                terms[-1] = terms[-1] * operand if operator == "*" else terms[-1] / operand
            else:
                terms.append(operand)
                signs.append(1 if operator == "+" else -1)
        assert Fraction(info["answer"]) == sum(sign * term for sign, term in zip(signs, terms))


# ----------------------------------------------------------------- linear equations
def _side_value(text: str, values: dict[str, int]) -> Fraction:
    text = re.sub(r"(\d)([xyz])", r"\1*\2", text)
    for name, value in values.items():
        text = text.replace(name, f"({value})")
    return evaluate(text).value


@pytest.mark.parametrize("unknowns", [1, 2, 3])
def test_linear_gold_solution_satisfies_the_equations(unknowns):
    env = LinearEquationEnv(num_unknowns=unknowns, split="all")
    for seed in range(25):
        _, info = env.reset(seed=seed)
        answer = info["answer"]
        values = {"x": int(answer)} if unknowns == 1 else \
            {name: int(value) for name, value in (item.split("=") for item in answer.split(", "))}
        for equation in info["equations"]:
            left, right = equation.split(" = ")
            assert _side_value(left, values) == _side_value(right, values), (equation, values)


def test_linear_system_grader_accepts_assignments_or_a_tuple():
    env = LinearEquationEnv(num_unknowns=2, split="all")
    env.reset(seed=0)
    gold = dict(item.split("=") for item in env.problem.answer.split(", "))
    x, y = gold["x"], gold["y"]
    for response in (f"y = {y} and x = {x}", f"\\boxed{{({x}, {y})}}", f"x={x}, y={y}"):
        assert env.step(response)[1] == 1.0, response
        env.reset(seed=0)
    assert env.step(f"x = {y}, y = {x}")[1] == (1.0 if x == y else 0.0)


# ----------------------------------------------------------------- word problems: an independent interpreter
def _interpret(story: str) -> int:
    count = 0
    for sentence in re.split(r"(?<=[.?])\s", story):
        if match := re.search(r"\w+ has (\d+) \w+\.$", sentence):
            count = int(match.group(1))
        elif match := re.search(r"buys (\d+) \w+ of (\d+)", sentence):
            count += int(match.group(1)) * int(match.group(2))
        elif match := re.search(r"finds (\d+) more", sentence):
            count += int(match.group(1))
        elif match := re.search(r"gives (\d+) \w+ to", sentence):
            count -= int(match.group(1))
        elif "as many" in sentence:
            count *= 2
        elif match := re.search(r"equally with (\d+) friends", sentence):
            assert count % (int(match.group(1)) + 1) == 0
            count //= int(match.group(1)) + 1
    return count


@pytest.mark.parametrize("steps", [1, 3, 6])
def test_word_problem_answers_match_an_interpreter_of_the_text(steps):
    env = WordProblemEnv(num_steps=steps, split="all")
    for seed in range(40):
        prompt, info = env.reset(seed=seed)
        story = prompt.removesuffix("\nAnswer:")
        assert story.count(".") == steps + 1
        assert int(info["answer"]) == _interpret(story) >= 0


# ----------------------------------------------------------------- countdown
def test_countdown_targets_are_reachable_by_brute_force():
    env = CountdownEnv(num_numbers=3, split="all")

    def reachable(numbers: list[Fraction]) -> set[Fraction]:
        if len(numbers) == 1:
            return {numbers[0]}
        results = set()
        for i, j in itertools.permutations(range(len(numbers)), 2):
            rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
            a, b = numbers[i], numbers[j]
            for value in {a + b, a - b, a * b} | ({a / b} if b else set()):
                results |= reachable(rest + [value])
        return results

    for seed in range(15):
        _, info = env.reset(seed=seed)
        assert Fraction(info["target"]) in reachable([Fraction(n) for n in info["numbers"]])


def test_countdown_grader_rules():
    env = CountdownEnv(num_numbers=3, split="all")
    env.reset(seed=1)
    numbers, target = env.problem.metadata["numbers"], env.problem.metadata["target"]
    answer = env.problem.answer
    assert env.step(f"I think\n{answer} = {target}")[1] == 1.0
    env.reset(seed=1)
    assert env.step(f"<answer>{answer}</answer>\nlater text")[1] == 1.0
    env.reset(seed=1)
    assert env.step(f"{target}")[1] == (1.0 if [target] == numbers else 0.0)  # uses numbers not given
    env.reset(seed=1)
    assert env.step("+".join(map(str, numbers)))[1] == (1.0 if sum(numbers) == target else 0.0)
    loose = CountdownEnv(num_numbers=3, use_all=False, split="all")
    loose.reset(seed=1)
    first = loose.problem.metadata["numbers"][0]
    assert loose.step(str(first))[1] == (1.0 if first == loose.problem.metadata["target"] else 0.0)
    loose.reset(seed=1)
    assert loose.step(f"{first}*{first}*{first}*{first}")[1] == 0.0  # reuses a number


# ----------------------------------------------------------------- calculator tool use
def test_calculator_tool_call_result_and_episode():
    env = CalculatorEnv(call_cost=0.1, split="all")
    prompt, info = env.reset(seed=4)
    assert "Compute: " in prompt and env.stop_strings == ("</calc>", "</answer>")
    observation, reward, terminated, truncated, step_info = env.step(f"<calc>{info['expression']}</calc>")
    assert observation == f"\n<result>{info['answer']}</result>\n"
    assert (reward, terminated, truncated, step_info["tool_call"]) == (-0.1, False, False, True)
    observation, reward, terminated, truncated, step_info = env.step(f"<answer>{info['answer']}</answer>")
    assert (reward, terminated, truncated, step_info["correct"], step_info["calls"]) == (1.0, True, False, True, 1)


@pytest.mark.parametrize("call,result", [("2*(3+4)", "14"), ("7/2", "7/2"), ("1/0", "error: division by zero"),
                                         ("9^9^9", "error: exponent must be an integer of size at most 64")])
def test_calculator_results(call, result):
    env = CalculatorEnv(split="all")
    env.reset(seed=0)
    assert env.step(f"<calc>{call}</calc>")[0] == f"\n<result>{result}</result>\n"


def test_calculator_truncates_a_policy_that_only_calls_the_tool():
    env = CalculatorEnv(max_turns=3, call_cost=0.05, split="all")
    episode = run_episode(env, always("<calc>1+1</calc>"), seed=0)
    assert episode.truncated and not episode.terminated and episode.info["correct"] is False
    assert episode.total_reward == pytest.approx(-0.15) and env.reward_range[0] <= episode.total_reward


def test_calculator_answer_tag_required():
    strict, lenient = CalculatorEnv(answer_tag_required=True, split="all"), CalculatorEnv(split="all")
    for env in (strict, lenient):
        env.reset(seed=2)
    answer = strict.problem.answer
    assert strict.step(f"it is {answer}")[1] == 0.0
    assert lenient.step(f"it is {answer}")[1] == 1.0


# ----------------------------------------------------------------- maze
def _brute_force_distance(grid: list[str], start, goal, limit: int) -> int | None:
    for length in range(limit + 1):
        for moves in itertools.product("UDLR", repeat=length):
            row, col = start
            for move in moves:
                dr, dc = MOVES[move]
                if grid[row + dr][col + dc] != "#":
                    row, col = row + dr, col + dc
            if (row, col) == goal:
                return length
    return None


def test_maze_oracle_path_is_shortest_and_walls_block():
    env = MazeEnv(size=3, max_turns=8, split="all")
    for seed in range(12):
        _, info = env.reset(seed=seed)
        assert len(info["answer"]) == _brute_force_distance(info["grid"], info["start"], info["goal"], 8)
    env.reset(seed=0)
    row, col = env.position
    for move, (dr, dc) in MOVES.items():
        if env.grid[row + dr][col + dc] == "#":
            assert env.step(move)[0] == f"wall, at ({row},{col})\n" and env.position == (row, col)
            break


def test_maze_invalid_moves_use_up_turns():
    env = MazeEnv(max_turns=5, split="all")
    episode = run_episode(env, always("jump"), seed=3)
    assert episode.truncated and len(episode.actions) == 5 and episode.total_reward == 0.0


# ----------------------------------------------------------------- number guessing
def test_binary_search_finds_every_secret_within_the_turn_limit():
    env = NumberGuessEnv(high=100, split="all")
    assert env.max_turns == binary_search_turns(100) == 7
    secrets = set()
    for seed in range(300):
        episode = run_episode(env, oracle, seed)
        assert episode.terminated and episode.total_reward == 1.0
        secrets.add(env.secret)
    assert len(secrets) > 80


def test_guessing_replies():
    env = NumberGuessEnv(high=100, split="all")
    env.reset(seed=0)
    secret = env.secret
    if secret < 100:
        assert env.step(f"I guess {secret + 1}")[0] == "lower\nGuess:"
    assert env.step("no idea")[0] == "say a number from 1 to 100\nGuess:"
    assert env.step(str(secret))[1:3] == (1.0, True)


# ----------------------------------------------------------------- datasets
@pytest.mark.parametrize("raw,answer_format,expected", [
    ("Natalia sold 48/2 = 24 clips.\n#### 1,072", "gsm8k", "1072"), ("no marker", "gsm8k", None),
    ("So $x = \\boxed{\\frac{1}{2}}$.", "math", "\\frac{1}{2}"), ("042", "aime", "42"), ("4.2", "aime", None),
    ("#### 7", "auto", "7"), ("\\boxed{3}", "auto", "3"), ("17", "auto", "17"), ("yes", "plain", "yes")])
def test_gold_answer_extraction(raw, answer_format, expected):
    assert gold_answer(raw, answer_format) == expected


def test_dataset_from_a_user_file_with_named_columns(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"q": f"What is {n} plus {n}?", "a": f"Add.\n#### {2 * n}"} for n in range(10)] + [{"q": "bad", "a": "?"}]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    env = DatasetEnv(path=path, question_field="q", answer_field="a", answer_format="gsm8k")
    assert len(env.problems) == 10 and env.skipped == 1
    prompt, info = env.reset(seed=5)
    n = int(re.search(r"\d+", prompt).group())
    assert info["answer"] == str(2 * n) and env.step(f"\\boxed{{{2 * n}}}")[1] == 1.0


def test_dataset_reads_json_lists_and_parquet(tmp_path):
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    assert len(DatasetEnv(path=tmp_path / "list.json").problems) == 2
    parquet = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "rows.parquet")
    assert len(DatasetEnv(path=tmp_path / "rows.parquet", answer_format="aime").problems) == 2


@pytest.mark.parametrize("kwargs,field", [({"path": "/nonexistent/file.jsonl"}, "path"),
                                          ({"question_field": "nope"}, "question_field"),
                                          ({"answer_format": "csv"}, "answer_format"),
                                          ({"answer_format": "math"}, "path")])
def test_dataset_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DatasetEnv(**kwargs)


def test_dataset_unreadable_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="path: cannot read"):
        DatasetEnv(path=path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    (tmp_path / "rows.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="pip install pyarrow"):
        DatasetEnv(path=tmp_path / "rows.parquet")


# ----------------------------------------------------------------- knobs and bad arguments
@pytest.mark.parametrize("env_id,kwargs,field", [
    ("covgym/Fractions-v0", {"mode": "roman"}, "mode"), ("covgym/Countdown-v0", {"num_numbers": 9}, "num_numbers"),
    ("covgym/LinearEquations-v0", {"num_unknowns": 4}, "num_unknowns"),
    ("covgym/WordProblems-v0", {"num_steps": 0}, "num_steps"), ("covgym/Maze-v0", {"size": 1}, "size"),
    ("covgym/Maze-v0", {"max_turns": 1}, "max_turns"), ("covgym/NumberGuess-v0", {"high": 1}, "high"),
    ("covgym/Calculator-v0", {"call_cost": -1}, "call_cost"), ("covgym/Arithmetic-v0", {"split": "dev"}, "split")])
def test_bad_knobs_are_rejected_naming_the_field(env_id, kwargs, field):
    with pytest.raises(ValueError, match=field):
        gym.make(env_id, **kwargs)


@pytest.mark.parametrize("env_id,kwargs", [
    ("covgym/Fractions-v0", {"num_terms": 4, "max_denominator": 50}), ("covgym/Decimals-v0", {"decimal_places": 3}),
    ("covgym/Countdown-v0", {"num_numbers": 5, "max_target": 1000}), ("covgym/Maze-v0", {"size": 7, "max_turns": 30}),
    ("covgym/NumberGuess-v0", {"high": 1000}), ("covgym/Calculator-v0", {"digits": 4, "num_terms": 4}),
    ("covgym/LinearSystems-v0", {"num_unknowns": 3, "coefficient_range": 20})])
def test_harder_settings_still_have_solvable_problems(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    for seed in range(10):
        assert run_episode(env, oracle, seed).total_reward == pytest.approx(env.unwrapped.reward_range[1])


def test_arithmetic_prompt_format_is_unchanged():
    prompt, info = gym.make("covgym/Arithmetic-v0").reset(seed=0)
    assert re.fullmatch(r"Compute: \d[-+]\d[-+]\d\nAnswer:", prompt)  # defaults: 3 one-digit terms
    assert int(info["answer"]) == evaluate(info["expression"]).value
