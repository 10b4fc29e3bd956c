"""Nothing lost, nothing hangs: kill-and-resume equals an uninterrupted run, guarded updates, atomic files."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from covgym.train.checkpoint import CheckpointError, atomic_write, list_checkpoints, save_checkpoint
from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig
from covgym.train.trainer import Trainer, TrainingError

VOLATILE = ("time_", "tokens_per_s")


def stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(VOLATILE)}


def cli_args(model: Path, run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "covgym", "train", "--model", str(model), "--run-dir", str(run_dir),
            "--steps", str(steps), "--save-every", "1", "--keep-checkpoints", "3", "--prompts-per-step", "4",
            "--group-size", "4", "--max-new-tokens", "6", "--mini-batches", "2", "--lr", "1e-4",
            "--eval-problems", "4", "--eval-samples", "2", "--progress", "false", "--seed", "7"]


def final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final_model" / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 6
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(cli_args(tiny_model_path, reference_dir, steps), check=True, env=env, capture_output=True,
                   timeout=600)

    process = subprocess.Popen(cli_args(tiny_model_path, killed_dir, steps), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(list_checkpoints(killed_dir)) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = max(step for step, _ in list_checkpoints(killed_dir))
    assert done < steps, "the run finished before it could be killed"
    # What a kill in the middle of writing leaves behind: a temp file and a half-written metrics line.
    (killed_dir / "checkpoints" / f".step-{done + 1:08d}.pt.abc.tmp").write_bytes(b"\x80partial")
    with open(killed_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 99, "reward_me')

    resumed = subprocess.run([sys.executable, "-m", "covgym", "train", "--resume", str(killed_dir)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr

    reference = [stable(json.loads(x)) for x in (reference_dir / "metrics.jsonl").read_text().splitlines()]
    recovered = [stable(json.loads(x)) for x in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recovered] == list(range(1, steps + 1))  # no step lost, none duplicated
    assert recovered == reference
    want, got = final_parameters(reference_dir), final_parameters(killed_dir)
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def small_trainer(tmp_path: Path, model: Path, **optim) -> Trainer:
    config = TrainConfig(steps=3, run_dir=str(tmp_path / "run"), eval_problems=0, progress=False,
                         entropy_dynamics=False, model=ModelConfig(model=str(model)),
                         rollout=RolloutConfig(prompts_per_step=2, group_size=4, max_new_tokens=6),
                         optim=OptimConfig(lr=1e-3, mini_batches=1, **optim))
    return Trainer(config)


def inject_nan_on_calls(trainer: Trainer, calls: set[int]) -> list[int]:
    original = trainer.algorithm.policy_loss
    seen: list[int] = []

    def poisoned(*args, **kwargs):
        loss, metrics = original(*args, **kwargs)
        seen.append(len(seen))
        return (loss * float("nan"), metrics) if len(seen) - 1 in calls else (loss, metrics)

    trainer.algorithm.policy_loss = poisoned  # type: ignore[method-assign]
    return seen


def test_non_finite_loss_skips_the_update_and_the_run_continues(tmp_path, tiny_model_path):
    trainer = small_trainer(tmp_path, tiny_model_path)
    inject_nan_on_calls(trainer, {0})
    before = [p.detach().clone() for p in trainer.policy.model.parameters()]
    batch, _ = trainer.rollout(1)
    batch = batch.replace(rewards=torch.tensor([1.0, 0.0, 0.0, 0.0] * 2))  # non-zero advantages in every group
    metrics = trainer.update(batch, 1)
    assert metrics["skipped_updates"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.model.parameters()))
    assert all(torch.isfinite(p).all() for p in trainer.policy.model.parameters())
    later = trainer.update(batch, 2)  # the next update goes through
    assert later["skipped_updates"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.model.parameters()))


def test_too_many_consecutive_skips_stop_with_a_clear_message(tmp_path, tiny_model_path):
    trainer = small_trainer(tmp_path, tiny_model_path, max_consecutive_skips=2)
    inject_nan_on_calls(trainer, set(range(100)))
    with pytest.raises(TrainingError, match="2 consecutive updates skipped.*No checkpoint was written yet"):
        trainer.train()  # it stops before any checkpoint, and says so rather than call one intact
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "run").rglob("*"))


def test_a_full_disk_while_checkpointing_leaves_no_partial_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"x": torch.ones(2)}, keep=3)

    def failing_save(obj, handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path, 2, {"x": torch.ones(2)}, keep=3)
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["step-00000001.pt"]


def test_atomic_write_never_exposes_a_partial_file(tmp_path):
    target = tmp_path / "config.json"
    atomic_write(target, lambda handle: handle.write(b'{"a": 1}'))

    def crash(handle):
        handle.write(b'{"a": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b'{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_corrupt_checkpoint_is_reported_by_name(tmp_path, tiny_model_path):
    trainer = small_trainer(tmp_path, tiny_model_path)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step-00000002.pt").write_bytes(b"garbage")
    trainer.resume = True
    with pytest.raises(CheckpointError, match="step-00000002.pt is unreadable"):
        trainer.train()


def test_resume_of_a_directory_without_a_run_is_a_usage_error(tmp_path, capsys):
    from covgym.cli import main

    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
