"""Readable samples (samples.jsonl, `covgym show`), the dead-signal warning, and messages that tell the truth."""

from __future__ import annotations

import io
import json

import pytest
import torch

from covgym import cli
from covgym.core.batch import RolloutBatch
from covgym.models.sources import resolve_model
from covgym.train.dead_signal import DeadSignalMonitor, signal_statistics
from covgym.train.interrupt import interrupt_note
from covgym.train.samples import (SampleWriter, episode_records, load_samples,
                                  spread_rows)
from covgym.train.show import show

SMALL = ["--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "4", "--progress", "false",
         "--tensorboard", "false", "--eval-problems", "2", "--eval-samples", "2"]


def record(step: int, split: str = "train", reward: float = 0.0) -> dict:
    return {"step": step, "split": split, "prompt": "Compute: 1+1\nAnswer:", "reward": reward, "correct": reward > 0,
            "reason": "numeric mismatch", "extracted": "3", "answer": "2",
            "tokens": [[" ", 0.05], ["3", 1.7], ["\n<result>", None], ["<eos>", 0.2]]}


def test_signal_statistics_count_flat_groups_and_all_zero_steps():
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert signal_statistics(rewards, groups) == {"zero_variance_group_ratio": 2 / 3, "all_zero_reward": 0.0}
    assert signal_statistics(torch.zeros(4), torch.tensor([0, 0, 1, 1])) == {"zero_variance_group_ratio": 1.0,
                                                                            "all_zero_reward": 1.0}


def test_dead_signal_warns_once_at_patience_and_names_the_causes():
    monitor = DeadSignalMonitor(patience=3, env_id="covgym/Calculator-v0", run_dir="runs/x")
    dead = {"zero_variance_group_ratio": 1.0, "all_zero_reward": 1.0}
    messages = [monitor.update({**dead, "step": step}) for step in range(1, 7)]
    assert [m is not None for m in messages] == [False, False, True, False, False, False]
    assert "steps 1-3" in messages[2] and "covgym warmstart --env covgym/Calculator-v0" in messages[2]
    assert "covgym show runs/x" in messages[2] and "format" in messages[2] and "grader" in messages[2]
    assert monitor.update({"zero_variance_group_ratio": 0.5, "step": 7}) is None and monitor.streak == 0
    alive = DeadSignalMonitor(patience=2)
    assert all(alive.update({"zero_variance_group_ratio": 0.9, "all_zero_reward": 0.0}) is None for _ in range(9))
    off = DeadSignalMonitor(patience=0)
    assert all(off.update(dead) is None for _ in range(9))
    plugged = DeadSignalMonitor(patience=1, env_id="my/Reverse-v0", plugins=("/home/me/reverse.py",))
    assert "covgym warmstart --plugin /home/me/reverse.py --env my/Reverse-v0" in plugged.update(dead)
    same = DeadSignalMonitor(patience=1)
    assert "too easy" in same.update({"zero_variance_group_ratio": 1.0, "all_zero_reward": 0.0, "reward_mean": 1.0})


def test_episode_records_read_left_padded_rows_as_right_padded_ones():
    """TRL pads prompts on the left; a record must not depend on where the padding sits."""
    prompt, response, policy = [5, 6, 7], [8, 9, 3], [1.0, 0.0, 1.0]  # token 9: written by the env
    entropy = [0.7, 0.0, 0.25]

    def batch(left: int, right: int, prompt_lengths: bool) -> RolloutBatch:
        width = left + len(prompt) + len(response) + right
        pad = lambda values, fill: [fill] * left + values + [fill] * right  # noqa: E731
        return RolloutBatch(
            input_ids=torch.tensor([pad(prompt + response, 0)]),
            attention_mask=torch.tensor([pad([1] * 6, 0)]),
            response_mask=torch.tensor([pad([0.0] * 3 + policy, 0.0)]),
            old_log_probs=torch.zeros(1, width), rewards=torch.tensor([1.0]), group_ids=torch.tensor([0]),
            entropies=torch.tensor([pad([0.0] * 3 + entropy, 0.0)]),
            prompt_lengths=torch.tensor([3]) if prompt_lengths else None,
            info=[{"correct": True, "reason": "", "answer": "2"}])

    def records(b: RolloutBatch) -> list[dict]:
        return episode_records(b, lambda i: f"<{i}>", [0], step=1, split="train")

    expected = records(batch(0, 2, prompt_lengths=True))
    assert expected[0]["prompt"] == "<5><6><7>"
    assert expected[0]["tokens"] == [["<8>", 0.7], ["<9>", None], ["<3>", 0.25]]
    assert records(batch(3, 1, prompt_lengths=False)) == expected
    assert records(batch(0, 0, prompt_lengths=False)) == expected


def test_spread_rows_prefers_distinct_prompts():
    assert spread_rows([0, 0, 1, 1, 2, 2], 2) == [0, 2]
    assert spread_rows([0, 0, 1, 1], 3) == [0, 2, 1]


def test_sample_file_is_capped_and_resume_drops_later_steps(tmp_path, caplog):
    writer = SampleWriter(tmp_path, max_mb=2000 / 2**20)
    written = sum(writer.write([record(step)]) for step in range(1, 50))
    assert 0 < written < 49 and (tmp_path / "samples.jsonl").stat().st_size <= 2000
    assert sum("cap" in message for message in caplog.messages) == 1  # warned once, not on every step
    SampleWriter(tmp_path, max_mb=1.0, resume_step=3)
    assert [r["step"] for r in load_samples(tmp_path)] == [1, 2, 3]


def test_show_colours_only_when_asked(tmp_path, monkeypatch):
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in
                                                    [record(0, "test"), record(1), record(2, reward=1.0)]))
    out = io.StringIO()
    assert show(str(tmp_path), stream=out) == 1  # the last step by default
    text = out.getvalue()
    assert "\033[" not in text and "step 2: training rollouts" in text and "response:  3[env: \n            <result>]<eos>" in text
    assert "max 1.700 at token '3'" in text
    coloured = io.StringIO()
    show(str(tmp_path), step=0, colour="always", stream=coloured)
    assert "held-out evaluation" in coloured.getvalue() and "\033[33m3\033[0m" in coloured.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = io.StringIO()
    plain.isatty = lambda: True  # a terminal, but NO_COLOR wins
    show(str(tmp_path), stream=plain)
    assert "\033[" not in plain.getvalue()
    with pytest.raises(ValueError, match="steps with samples: 0, 1, 2"):
        show(str(tmp_path), step=9, stream=io.StringIO())


def test_interrupt_note_says_what_was_saved(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    note = interrupt_note(tmp_path)
    assert "no checkpoint" in note and "intact" not in note and "3 step(s)" in note
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-00000002.pt").write_bytes(b"x")
    note = interrupt_note(tmp_path)
    assert "checkpoint of step 2" in note and "step 3" not in note and "steps 3-3" in note
    assert f"--resume {tmp_path}" in note


def test_model_pointing_at_a_run_directory_suggests_its_final_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="resume it first"):
        resolve_model(str(tmp_path))
    (tmp_path / "final_model").mkdir()
    with pytest.raises(ValueError, match=f"did you mean '{tmp_path / 'final_model'}'"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("argv, named", [(["--seed", "-1"], "seed"), (["--samples-every", "0"], "samples_every"),
                                         (["--dead-signal-steps", "-2"], "dead_signal_steps")])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, argv, named):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--steps", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"covgym: error: {named}:") and len(err.strip().splitlines()) == 1
    assert not run.exists()


@pytest.mark.slow
def test_a_run_stores_readable_samples_and_resume_errors_exit_2(tmp_path, capsys, tiny_model_path):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--steps", "2", "--samples-per-step", "3", *SMALL]) == 0
    records = load_samples(run)
    assert sorted({(r["step"], r["split"]) for r in records}) == [(0, "test"), (1, "train"), (2, "test"),
                                                                  (2, "train")]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 2 * 3 and all(r["prompt"].startswith("Compute:") for r in train)
    for r in train:  # the tokens are the response, each policy token with its entropy
        assert r["reason"] and all(entropy is None or entropy >= 0 for _, entropy in r["tokens"])
        assert any(entropy is not None for _, entropy in r["tokens"])
    capsys.readouterr()
    assert cli.main(["show", str(run), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 1: training rollouts, 3 samples" in out and "prompt:   Compute:" in out
    for checkpoint in (run / "checkpoints").glob("*.pt"):
        checkpoint.write_bytes(b"garbage")
    assert cli.main(["train", "--resume", str(run), "--steps", "3"]) == 2  # an unreadable checkpoint: bad input
    assert "unreadable" in capsys.readouterr().err
    assert cli.main(["eval", "--model", str(run), "--problems", "1"]) == 2
    assert f"did you mean {str(run / 'final_model')!r}" in capsys.readouterr().err
    samples_file = tmp_path / "eval.jsonl"
    argv = ["eval", "--model", str(run / "final_model"), "--problems", "3", "--samples", "2", "--max-new-tokens", "4",
            "--samples-file", str(samples_file)]
    assert cli.main(argv) == 0
    assert [r["split"] for r in load_samples(samples_file)] == ["test"] * 3  # one per problem
    assert cli.main(argv) == 2  # an existing samples file is never overwritten


@pytest.mark.slow
def test_samples_reach_tensorboard_as_text(tmp_path, monkeypatch, tiny_model_path):
    import sys
    import types

    texts: list[tuple[str, str, int]] = []

    class FakeWriter:  # tensorboard itself is an optional extra; this records what would be written
        def __init__(self, logdir: str) -> None:
            pass

        def add_scalar(self, *args) -> None:
            pass

        def add_text(self, tag: str, text: str, step: int) -> None:
            texts.append((tag, text, step))

        def close(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--steps", "1", *SMALL, "--tensorboard", "true"]) == 0
    assert {(tag, step) for tag, _, step in texts} == {("samples/test", 0), ("samples/train", 1), ("samples/test", 1)}
    assert all("**reward" in text and "Compute:" in text for _, text, _ in texts)


BROKEN_ENV = '''\
import gymnasium as gym
from covgym.envs import Problem, SingleTurnEnv


class BrokenEnv(SingleTurnEnv):
    """Held-out problems work; training problems cannot be drawn: every run fails while training."""

    def generate_problem(self, rng):
        if self.split == "train":
            raise RuntimeError("broken on purpose")
        a, b = (int(x) for x in rng.integers(0, 10, size=2))
        return Problem(prompt=f"Compute: {a}+{b}\\nAnswer:", answer=str(a + b))


gym.register(id="broken/Broken-v0", entry_point=BrokenEnv)
'''


@pytest.mark.slow
def test_a_bench_whose_runs_all_failed_exits_non_zero(tmp_path, capsys, tiny_model_path):
    (tmp_path / "broken_env.py").write_text(BROKEN_ENV)
    (tmp_path / "bench.yaml").write_text("plugins: [broken_env.py]\nenvs:\n  - {env: broken/Broken-v0, steps: 1}\n"
                                         "methods: [grpo]\nseeds: [0]\neval_problems: 2\n")
    code = cli.main(["bench", "--config", str(tmp_path / "bench.yaml"), "--no-plots", "--no-progress", "--out",
                     str(tmp_path / "out")])
    assert code == 1
    assert "1 of 1 run(s) failed" in capsys.readouterr().err


def test_interrupting_train_reports_what_was_saved(tmp_path, capsys, monkeypatch, tiny_model_path):
    from covgym.train.trainer import Trainer

    def interrupted(self):
        self.run_dir.mkdir(parents=True)
        (self.run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    assert cli.main(["train", "--run-dir", str(tmp_path / "run"), *SMALL]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint" in err and "intact" not in err


def test_env_kwargs_the_env_does_not_take_are_one_line_before_anything_is_written(tmp_path, capsys,
                                                                                  tiny_model_path):
    run = tmp_path / "run"
    assert cli.main(["train", "--run-dir", str(run), "--env-kwargs", '{"nope": 1}', *SMALL]) == 2
    err = capsys.readouterr().err
    assert "unexpected keyword argument 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
