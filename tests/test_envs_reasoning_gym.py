"""The reasoning-gym adapter, against a stand-in module (the real package is an optional extra)."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
from gymnasium.utils.env_checker import check_env

from covgym.envs.reasoning_gym_adapter import ReasoningGymEnv, extract_tagged_answer
from covgym.envs.testing import oracle, run_episode


class _Dataset:
    """Like a reasoning-gym ProceduralDataset: indexable entries and a scorer with partial credit."""

    def __init__(self, size: int, seed: int) -> None:
        self.entries = [{"question": f"How many legs do {n} cats have?", "answer": str(4 * n), "metadata": {}}
                        for n in range(seed + 1, seed + size + 1)]

    def __getitem__(self, index: int) -> dict:
        return self.entries[index]

    def score_answer(self, answer, entry) -> float:
        if answer == "boom":
            raise RuntimeError("scorer bug")
        if answer == entry["answer"]:
            return 1.0
        return 0.5 if entry["answer"] in (answer or "") else 0.0


@pytest.fixture
def fake_reasoning_gym(monkeypatch):
    module = types.ModuleType("reasoning_gym")

    def create_dataset(name, size, seed, **config):
        if name != "leg_counting":
            raise KeyError(name)
        return _Dataset(size, seed)

    module.create_dataset = create_dataset
    monkeypatch.setitem(sys.modules, "reasoning_gym", module)
    return module


def test_extract_tagged_answer():
    assert extract_tagged_answer("x <answer> 8 </answer> y <answer>12</answer>") == "12"
    assert extract_tagged_answer("so \\boxed{7}") == "7" and extract_tagged_answer("  9 ") == "9"


def test_partial_credit_is_an_explicit_choice(fake_reasoning_gym):
    strict = ReasoningGymEnv(size=20)
    lenient = ReasoningGymEnv(size=20, partial_credit=True)
    for env in (strict, lenient):
        _, info = env.reset(seed=3)
    contains_gold = f"<answer>about {info['answer']} legs</answer>"
    assert strict.step(contains_gold)[1] == 0.0
    _, reward, _, _, step_info = lenient.step(contains_gold)
    assert reward == 0.5 and step_info["correct"] is False and step_info["score"] == 0.5
    for env in (strict, lenient):
        env.reset(seed=3)
        assert env.step(f"<answer>{info['answer']}</answer>")[1:3] == (1.0, True)


def test_adapter_passes_the_contract(fake_reasoning_gym):
    env = ReasoningGymEnv(size=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    assert all(run_episode(env, oracle, seed).total_reward == 1.0 for seed in range(10))
    env.reset(seed=0)
    _, reward, _, _, info = env.step("<answer>boom</answer>")
    assert reward == 0.0 and "raised" in info["reason"]


def test_adapter_errors(fake_reasoning_gym, monkeypatch):
    with pytest.raises(ValueError, match="task"):
        ReasoningGymEnv(task="no_such_task")
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    with pytest.raises(ValueError, match="pip install reasoning-gym"):
        ReasoningGymEnv()
