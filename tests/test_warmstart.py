"""`covgym warmstart`: oracle transcripts with near misses, refusals it owes the user, and a model usable at once."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from covgym import cli
from covgym.envs import Grade, MultiTurnEnv, Problem, SingleTurnEnv
from covgym.train.warmstart import WarmStartError, build_warmstart, demonstrations, is_warm_started, near_miss


class ExactEnv(SingleTurnEnv):
    """Reverse a word, exact match; the default (boxed) oracle."""

    def generate_problem(self, rng):
        word = "".join(rng.choice(list("abc"), size=int(rng.integers(2, 5))))
        return Problem(prompt=f"Reverse {word}\nAnswer:", answer=word[::-1])

    def grade(self, response, problem):
        return Grade(correct=response.strip() == problem.answer, extracted=response.strip(), reason="exact")


class FixedExactEnv(ExactEnv):
    def oracle_action(self):
        return " " + self.problem.answer


class LongEnv(FixedExactEnv):
    def generate_problem(self, rng):
        problem = super().generate_problem(rng)
        return Problem(prompt="x" * 600 + problem.prompt, answer=problem.answer)


class NoOracleEnv(MultiTurnEnv):
    def __init__(self, **kwargs):
        super().__init__(max_turns=2, **kwargs)

    def generate_problem(self, rng):
        return Problem(prompt=f"Say {int(rng.integers(1000))}\n", answer="1")

    def take_turn(self, action):
        return MultiTurnEnv.take_turn(self, action)


@pytest.fixture(autouse=True)
def registered_test_envs():
    """The test envs exist while this file's tests run, and are gone after (another file on the same worker
    checks that the registry holds exactly covgym's envs)."""
    ids = []
    for name, entry in (("Exact", ExactEnv), ("FixedExact", FixedExactEnv), ("Long", LongEnv),
                        ("NoOracle", NoOracleEnv)):
        ids.append(f"test_warm/{name}-v0")
        gym.register(id=ids[-1], entry_point=entry)
    yield
    for env_id in ids:
        gym.registry.pop(env_id, None)


def test_near_misses_are_close_but_different():
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert abs(int(near_miss("41", rng)) - 41) in (1, 2)
        missed = near_miss("abcde", rng)
        assert missed != "abcde" and abs(len(missed) - 5) <= 1
    assert near_miss(" 7\n", rng).endswith("\n")  # the form around the answer is kept


@pytest.mark.parametrize("env_id, message", [
    ("test_warm/Exact-v0", r"graded wrong by the env itself.*\\boxed\{\}"),
    ("test_warm/NoOracle-v0", "has no oracle_action"),
    ("test_warm/Long-v0", "longer than|more than the tiny model's 512-token context"),
])
def test_envs_it_cannot_learn_from_are_refused_by_name(env_id, message, tmp_path):
    with pytest.raises(WarmStartError, match=message):
        build_warmstart(env_id, out=tmp_path / "model", sft_steps=1, show_progress=False)
    assert not (tmp_path / "model").exists()


def test_transcripts_hold_near_misses_and_multi_turn_replies():
    single = demonstrations("test_warm/FixedExact-v0", {}, 200, seed=0, label_noise=0.5, max_tokens=512)
    answers = {segments[0][0]: segments[1][0] for segments in single}
    right = sum(answer == " " + prompt.split()[1].split("\n")[0][::-1] for prompt, answer in answers.items())
    assert 0.3 < right / len(answers) < 0.7  # about half are near misses
    assert all(segments[-1] == (None, True) for segments in single)  # each answer ends with <eos>
    games = demonstrations("covgym/NumberGuess-v0", {}, 50, seed=0, label_noise=0.3, max_tokens=512)
    replies = [text for segments in games for text, trained in segments[1:] if text and not trained]
    assert replies and all(not reply.strip().lstrip("-").isdigit() for reply in replies)  # env replies, untrained


@pytest.mark.slow
def test_warmstart_builds_a_model_that_trains_at_once(tmp_path, capsys, tiny_model_path):
    out = tmp_path / "model"
    argv = ["warmstart", "--env", "test_warm/FixedExact-v0", "--out", str(out), "--sft-steps", "5", "--no-progress"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)  # the last line: the directory
    assert is_warm_started(out) and json.loads((out / "covgym_spec.json").read_text())["env_id"] == \
        "test_warm/FixedExact-v0"
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert cli.main(argv) == 0 and (out / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert cli.main(argv[:-3] + ["--sft-steps", "6", "--no-progress"]) == 2  # other settings: never overwritten
    run = tmp_path / "run"
    assert cli.main(["train", "--env", "test_warm/FixedExact-v0", "--model", str(out), "--steps", "1",
                     "--run-dir", str(run), "--prompts-per-step", "2", "--group-size", "2", "--eval-problems", "0",
                     "--progress", "false", "--tensorboard", "false"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["optim"]["lr"] == 1e-4  # the tiny model's automatic learning rate, not a hub model's 1e-6
