"""docs/extending.md runs as written, and the issue's scenario: a user's own env and algorithm from a fresh directory
outside the repository train through --plugin, resume, and pass (or, when broken, fail) check-algorithm."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from test_advantages import make_batch
from test_plugins import forget_plugins  # noqa: F401 - fixture

import covgym.algorithms as algorithms
import covgym.train.plugins as plugins
from covgym import cli
from covgym.envs import SingleTurnEnv
from covgym.envs.testing import check_text_env
from covgym.testing import check_algorithm

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
#: appended to every training command: the tiny model for two small steps (later flags win in argparse)
TINY = ["--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--eval-problems", "0", "--max-new-tokens",
        "4", "--progress", "false", "--tensorboard", "false"]


def doc_files() -> dict[str, str]:
    """Each ```python block of the page, keyed by the file name its first line gives (``# name.py: ...``)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return {re.match(r"# (\S+\.py)", block).group(1): block for block in blocks}


def doc_commands() -> list[list[str]]:
    """The ``covgym ...`` lines of the page's ```sh blocks, as argument lists."""
    lines = [line for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S) for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("covgym ")]


def test_the_doc_examples_define_what_they_say(tmp_path, forget_plugins):  # noqa: F811
    files = doc_files()
    assert set(files) == {"count_letters.py", "median_baseline.py", "reverse_string.py", "capped_pg.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
        plugins.load_plugin(str(tmp_path / name))
    env = gym.make("my/CountLetters-v0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not caught
    assert "tight_grpo" in algorithms.names() and algorithms.get("tight_grpo")().clip_ratio == 0.1
    assert "group_invariants" in check_algorithm("median_baseline", max_examples=10)  # its declaration is checked
    check_algorithm("tight_grpo", max_examples=10)
    assert len(doc_commands()) >= 5
    check_text_env(gym.make("my/ReverseString-v0"))  # its oracle answers the way its grader wants
    assert "check_text_env" in DOC.read_text()
    boxed = gym.make("my/ReverseString-v0")
    boxed.unwrapped.oracle_action = lambda: SingleTurnEnv.oracle_action(boxed.unwrapped)  # the default, as the doc says
    with pytest.raises(AssertionError, match="the oracle was graded wrong"):
        check_text_env(boxed)
    capped = algorithms.get("capped_pg")()
    log_probs = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    _, metrics = capped.policy_loss(log_probs, log_probs - torch.tensor([[0.0, 1.0, 0.0]]), torch.ones(1, 3),
                                    torch.ones(1, 3))
    assert metrics["clip_frac"] == pytest.approx(1 / 3)  # its maps["clipped"] reached the metrics
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    batch = make_batch([1.0, 0.0], [0, 0], mask)
    composed = algorithms.get("median_baseline+ppo_clip")()
    composed.estimator.compute = lambda b: torch.ones_like(b.response_mask)  # an estimator that forgets the mask ...
    assert torch.equal(composed.advantages(batch), mask)  # ... is masked by the composition


@pytest.mark.slow
def test_the_doc_commands_run_and_train_two_steps(tmp_path, monkeypatch, tiny_model_path, forget_plugins):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    for name, code in doc_files().items():
        (tmp_path / name).write_text(code)
    model_dir = str(tmp_path / "warm")
    for index, argv in enumerate(doc_commands()):
        argv = [model_dir if arg == "MODEL_DIR" else arg for arg in argv]
        if argv[0] == "train":
            argv = argv + TINY + ["--run-dir", f"run{index}"]
        if argv[0] == "warmstart":  # a short build: what is tested is that the line runs and prints its directory
            argv = argv + ["--sft-steps", "3", "--out", model_dir, "--no-progress"]
        assert cli.main(argv) == 0, argv
        if argv[0] == "train":
            steps = [json.loads(line)["step"] for line in (tmp_path / f"run{index}" / "metrics.jsonl").open()]
            assert steps == [1, 2]


MINE = '''\
"""A user's own task and algorithm (the issue's scenario)."""
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import covgym.algorithms as algorithms
from covgym.envs import Grade, Problem, SingleTurnEnv


class ReverseStringEnv(SingleTurnEnv):
    """Reverse a short word."""

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        word = "".join(rng.choice(list("abcde"), size=int(rng.integers(2, 6))))
        return Problem(prompt=f"Reverse {word}\\nAnswer:", answer=word[::-1])

    def grade(self, response: str, problem: Problem) -> Grade:
        answer = response.strip()
        return Grade(correct=answer == problem.answer, extracted=answer, reason="exact match")


gym.register(id="my/ReverseString-v0", entry_point=ReverseStringEnv)


@algorithms.register
@dataclass
class MyAlgo(algorithms.GRPO):
    name = "my_algo"
    clip_ratio: float = 0.1
'''

BROKEN = '''\
from dataclasses import dataclass

import covgym.algorithms as algorithms


@algorithms.register
@dataclass
class Leaky(algorithms.GRPO):
    """Forgets the response mask: prompt and padding tokens are trained on."""

    name = "leaky_algo"

    def policy_loss(self, log_probs, old_log_probs, advantages, response_mask, entropy=None, **kwargs):
        loss = -(advantages * log_probs).mean()
        return loss, {"pg_loss": float(loss.detach())}
'''


@pytest.mark.slow
def test_must_show_a_users_env_and_algorithm_from_outside_the_repo(tmp_path, monkeypatch, capsys, tiny_model_path,
                                                                   forget_plugins):  # noqa: F811
    home = tmp_path / "fresh"
    home.mkdir()
    assert not str(home).startswith(str(DOC.parents[1]))
    (home / "mine.py").write_text(MINE)
    assert len(MINE.splitlines()) <= 32
    (home / "broken.py").write_text(BROKEN)
    monkeypatch.chdir(home)

    argv = ["train", "--plugin", "./mine.py", "--env", "my/ReverseString-v0", "--algo", "my_algo", "--run-dir", "run"]
    assert cli.main(argv + TINY) == 0
    config = json.loads((home / "run" / "config.json").read_text())
    assert config["plugins"] == [str(home / "mine.py")] and config["algo"] == "my_algo"

    assert cli.main(["eval", "--plugin", "./mine.py", "--env", "my/ReverseString-v0", "--problems", "2", "--samples",
                     "1", "--max-new-tokens", "4"]) == 0
    (home / "bench.yaml").write_text("methods: [my_algo]\nseeds: [0]\nenvs: [{env: my/ReverseString-v0, steps: 1, "
                                     "max_new_tokens: 4}]\nprompts_per_step: 2\ngroup_size: 2\nmini_batches: 2\n"
                                     "eval_problems: 0\nsave_every: 0\n")
    assert cli.main(["bench", "--plugin", "./mine.py", "--config", "bench.yaml", "--out", "bench", "--no-plots",
                     "--no-progress"]) == 0
    bench_config = json.loads(next((home / "bench").glob("*/my_algo/seed0/config.json")).read_text())
    assert bench_config["plugins"] == [str(home / "mine.py")]  # spawned workers and --resume import it too

    forget_plugins()  # as in a new process: nothing registered, the plugin not loaded
    assert "my_algo" not in algorithms.names() and "my/ReverseString-v0" not in gym.registry
    assert cli.main(["train", "--resume", "run", "--steps", "3"]) == 0  # config.json brings the plugin back
    steps = [json.loads(line)["step"] for line in (home / "run" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3]

    capsys.readouterr()
    assert cli.main(["check-algorithm", "my_algo", "--plugin", "./mine.py", "--max-examples", "10"]) == 0
    assert "my_algo: passed" in capsys.readouterr().out
    assert cli.main(["check-algorithm", "leaky_algo", "--plugin", "./broken.py", "--max-examples", "10"]) == 1
    err = capsys.readouterr().err
    assert "masked_gradient" in err and "but response_mask" in err and "response_mask = [[0.0]]" in err

    # the real console entry, once, in its own process
    covgym = Path(sys.executable).with_name("covgym")
    command = [str(covgym)] if covgym.exists() else [sys.executable, "-m", "covgym"]
    done = subprocess.run(command + ["check-algorithm", "my_algo", "--plugin", "./mine.py", "--max-examples", "5"],
                          cwd=home, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "my_algo: passed" in done.stdout
