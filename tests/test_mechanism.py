"""The mechanism testbed: its tasks, its model recipe, and the suite end to end in a tiny configuration."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest

import covgym  # noqa: F401  (registers the envs)
from covgym.envs.digit_sum import DigitSumFeedbackEnv, check, parse_attempt, solutions

REQUIRED_RUN_FIELDS = ("method", "env", "seed", "initial_entropy", "final_entropy", "accuracy_before", "accuracy",
                       "pass_at_k", "law_r2", "law_r2_linear")


def test_solutions_are_every_ordered_digit_tuple_with_the_sum():
    assert solutions(4, 2, None) == ("1+3", "2+2", "3+1")
    assert solutions(4, 2, 2) == ("1+3", "3+1")
    slow = [(a, b, c) for a in range(1, 10) for b in range(1, 10) for c in range(1, 10) if a + b + c == 13 and 5 not in (a, b, c)]
    assert len(solutions(13, 3, 5)) == len(slow)


@pytest.mark.parametrize("env_id", ["covgym/DigitSum-v0", "covgym/DigitSumFeedback-v0"])
def test_every_problem_has_several_answers_and_the_oracle_solves_it(env_id):
    env = gym.make(env_id)
    for seed in range(50):
        _, info = env.reset(seed=seed)
        assert info["num_solutions"] >= 3
        _, reward, terminated, _, step_info = env.step(env.unwrapped.oracle_action())
        assert reward == 1.0 and terminated and step_info["correct"]


def test_grader_accepts_any_correct_answer_and_rejects_the_rest():
    env = gym.make("covgym/DigitSum-v0").unwrapped
    env.reset(seed=3)
    problem = env.problem
    meta = problem.metadata
    for answer in solutions(meta["target"], meta["terms"], meta["banned"]):
        assert check(answer, problem)[0]
    assert not check("1+1", problem)[0] and not check("", problem)[0] and not check("x" * 10_000, problem)[0]
    assert parse_attempt(" 4+2+7\n") == (4, 2, 7) and parse_attempt("4+2+") is None


def test_two_banned_digits_are_excluded_and_named_in_the_prompt():
    assert solutions(6, 2, (1, 5)) == ("2+4", "3+3", "4+2")
    env = gym.make("covgym/DigitSum-v0").unwrapped
    prompts = []
    for seed in range(300):
        prompt, info = env.reset(seed=seed)
        banned = info["banned"] or ()
        assert len(banned) <= 2 and prompt.endswith(":")
        for answer in solutions(info["target"], info["terms"], banned):
            assert not set(map(int, answer.split("+"))) & set(banned)
        prompts.append(prompt)
    assert any(" or " in p for p in prompts) and any("no " in p and " or " not in p for p in prompts)
    with pytest.raises(ValueError, match="max_banned"):
        gym.make("covgym/DigitSum-v0", max_banned=3)


def test_held_out_split_has_more_than_five_hundred_distinct_problems():
    """Every problem is enumerated (terms, target, banned set) and split by its key: the evaluation of the
    mechanism suite grades EVAL_PROBLEMS distinct ones, so the held-out split must hold at least that many."""
    import itertools

    from covgym.benchmark.mechanism import EVAL_PROBLEMS
    from covgym.envs.base import Problem

    env = gym.make("covgym/DigitSum-v0", split="test").unwrapped
    bans = [()] + [(d,) for d in range(1, 10)] + list(itertools.combinations(range(1, 10), 2))
    held_out = 0
    for terms in (2, 3):
        for target in range(terms, 9 * terms + 1):
            for banned in bans:
                if len(solutions(target, terms, banned)) >= 3:
                    key = env.split_key(Problem("", "", {"target": target, "terms": terms, "banned": banned or None}))
                    held_out += env.in_split(key)
    assert held_out >= 500 and held_out >= EVAL_PROBLEMS


def test_feedback_env_tells_the_sum_and_lets_the_policy_retry():
    env = gym.make("covgym/DigitSumFeedback-v0", max_turns=2)
    prompt, info = env.reset(seed=1)
    assert prompt.endswith("Try:")
    wrong = env.unwrapped.sample_near_miss(env.unwrapped.problem, np.random.default_rng(0))
    observation, reward, terminated, truncated, _ = env.step(wrong + "\n")
    assert reward == 0.0 and not terminated and not truncated and observation.startswith("sum is ")
    repaired = DigitSumFeedbackEnv.repair(wrong, env.unwrapped.problem)
    _, reward, terminated, _, step_info = env.step(repaired + "\n")
    assert reward == 1.0 and terminated and step_info["correct"]


def test_retry_discount_pays_less_for_a_repaired_answer():
    env = gym.make("covgym/DigitSumFeedback-v0", max_turns=2, retry_discount=0.5)
    env.reset(seed=1)
    wrong = env.unwrapped.sample_near_miss(env.unwrapped.problem, np.random.default_rng(0))
    env.step(wrong + "\n")
    _, reward, terminated, _, info = env.step(DigitSumFeedbackEnv.repair(wrong, env.unwrapped.problem) + "\n")
    assert terminated and info["correct"] and reward == 0.5
    env.reset(seed=1)
    _, reward, terminated, _, _ = env.step(env.unwrapped.oracle_action())
    assert terminated and reward == 1.0  # a first-try answer pays in full
    with pytest.raises(ValueError, match="retry_discount"):
        gym.make("covgym/DigitSumFeedback-v0", retry_discount=0.0)


def test_the_multi_turn_task_gets_its_own_learning_rate_and_the_math_task_the_suite_s():
    from pathlib import Path

    from covgym.benchmark.mechanism import AGENTIC_LR, mechanism_spec

    spec = mechanism_spec()
    math, agentic = spec.envs
    assert spec.run_config(math, "grpo", 0, Path("x")).optim.lr == spec.lr
    assert spec.run_config(agentic, "kl_cov", 3, Path("x")).optim.lr == AGENTIC_LR != spec.lr
    assert len(spec.seeds) >= 10 and len(mechanism_spec(full=True).seeds) >= 20


def test_digit_sum_demonstrations_are_diverse_and_partly_wrong():
    from covgym.envs.base import Problem
    from covgym.models.tiny_model import DIGITS_MODEL_SPEC, _digit_sum_examples

    examples = _digit_sum_examples(DIGITS_MODEL_SPEC, 400, seed=0)
    single = [e for e in examples if e[-1][0] is None]  # single-turn demonstrations end in <eos>
    wrong = sum(not check(answer, Problem(prompt, "", _metadata_of(prompt)))[0] for (prompt, _), (answer, _), _ in single)
    noise = DIGITS_MODEL_SPEC.sft_label_noise
    assert noise - 0.1 < wrong / len(single) < noise + 0.1
    assert len({answer for _, (answer, _), _ in single}) > len(single) * 0.5  # not one answer per problem
    feedback = [e for e in examples if e[-1][0] is not None]
    assert any(len(e) == 4 and e[2][0].endswith("Try:") for e in feedback)  # a repaired second attempt


def _metadata_of(prompt: str) -> dict:
    target, rest = prompt.split(" from ")
    terms = int(rest.split(" ")[0])
    banned = tuple(int(d) for d in rest.split("no ")[1].rstrip(":").split(" or ")) if "no " in rest else None
    return {"target": int(target), "terms": terms, "banned": banned}


@pytest.mark.slow
def test_mechanism_suite_in_a_tiny_configuration(tmp_path):
    """The real suite's code path, shrunk: a briefly warm-started digits model, 2 methods × 2 seeds × both tasks,
    two processes. summary.json must hold every field the issue names, for every run."""
    from covgym.benchmark.mechanism import mechanism_spec
    from covgym.benchmark.sweep import BenchEnv, run_sweep
    from covgym.models.tiny_model import DIGITS_MODEL_SPEC, ensure_tiny_model

    model = ensure_tiny_model(dataclasses.replace(DIGITS_MODEL_SPEC, sft_steps=40, hidden_size=32,
                                                  num_hidden_layers=1, intermediate_size=64), show_progress=False)
    spec = dataclasses.replace(
        mechanism_spec(methods=("grpo", "kl_cov")), seeds=(0, 1), model=str(model), eval_problems=6,
        eval_samples=4, save_every=0, final_window=2,
        envs=(BenchEnv("covgym/DigitSum-v0", steps=4, max_new_tokens=10),
              BenchEnv("covgym/DigitSumFeedback-v0", steps=3, max_new_tokens=10)))
    result = run_sweep(spec, tmp_path, progress=False, plots=False, jobs=2)
    assert set(result.statuses.values()) == {"ran"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 2 * 2 * 2
    for run in summary["runs"]:
        for field in REQUIRED_RUN_FIELDS:
            assert field in run, field
        assert list(run["pass_at_k"]) == ["1", "2", "4"] and run["accuracy_before"] is not None
    # the shared evaluation before training is what each run's own trainer would have computed
    from covgym.train.trainer import Trainer

    config = spec.run_config(spec.envs[0], "kl_cov", 1, tmp_path / "fresh")
    own = Trainer(config).evaluate()
    shared = next(r for r in summary["runs"] if r["method"] == "kl_cov" and r["seed"] == 1
                  and r["env"] == spec.envs[0].env)
    assert shared["accuracy_before"] == own["accuracy"]
    assert shared["pass_at_k_before"] == {k[5:]: v for k, v in own.items() if k.startswith("pass@")}
    assert "kl_cov" in summary["paired_vs_baseline"]["covgym/DigitSum-v0"]
    assert summary["shared_budget"]["covgym/DigitSum-v0"]["optim.mini_batches"] == mechanism_spec().mini_batches


def test_no_problem_is_held_out_of_one_task_and_trained_on_in_the_other():
    single, feedback = (gym.make(env_id, split="test").unwrapped for env_id in
                        ("covgym/DigitSum-v0", "covgym/DigitSumFeedback-v0"))
    train_single, train_feedback = (gym.make(env_id, split="train").unwrapped for env_id in
                                    ("covgym/DigitSum-v0", "covgym/DigitSumFeedback-v0"))

    def keys(env):
        return {env.split_key(env.draw_problem(np.random.default_rng(seed))) for seed in range(1500)}

    test_keys = keys(single) | keys(feedback)
    assert test_keys and not test_keys & (keys(train_single) | keys(train_feedback))


def test_mechanism_suite_from_the_command_line_keeps_the_chosen_methods():
    import argparse

    from covgym.benchmark import command

    parser = argparse.ArgumentParser()
    command.add_bench_arguments(parser)
    spec = command.spec_from_args(parser.parse_args(["--suite", "mechanism", "--methods", "grpo,kl_cov"]))
    command.validate_spec(spec)
    assert spec.methods == ("grpo", "kl_cov") and set(spec.method_params) == {"grpo", "kl_cov"}
    assert all(set(env.methods_of(spec)) <= {"grpo", "kl_cov"} for env in spec.envs)
    with pytest.raises(ValueError, match="not a method of the mechanism suite"):
        command.spec_from_args(parser.parse_args(["--suite", "mechanism", "--methods", "grpo,nope"]))
