"""Safe run directories: a run never lands silently on top of another (refuse, --resume same config, --overwrite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covgym.cli import main
from covgym.train.config import TrainConfig
from covgym.train.run_dir import (RunDirError, check_partial_config, check_run_dir, clear_run_dir, config_differences,
                                  is_taken)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (and ``root`` itself when a file): its bytes and modification time."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def train_args(model: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--run-dir", str(run_dir), "--steps", "2", "--save-every", "1",
            "--prompts-per-step", "2", "--group-size", "4", "--max-new-tokens", "4", "--mini-batches", "1",
            "--eval-problems", "0", "--entropy-dynamics", "false", "--tensorboard", "false", "--progress", "false",
            *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("covgym: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_path) -> Path:
    """A real two-step GRPO run with checkpoints, metrics and a final model."""
    run_dir = tmp_path_factory.mktemp("runs") / "grpo"
    assert main(train_args(tiny_model_path, run_dir)) == 0
    return run_dir


def test_training_into_an_existing_run_exits_2_and_touches_nothing(finished_run, tiny_model_path, capsys):
    capsys.readouterr()
    before = snapshot(finished_run)
    assert {"config.json", "metrics.jsonl"} <= {Path(p).name for p in before}
    for extra in ([], ["--algo", "rloo"]):  # the case: another algorithm into the same directory
        assert main(train_args(tiny_model_path, finished_run, *extra)) == 2
        line = one_line_error(capsys)
        assert "is not empty" in line and "--resume" in line and "--overwrite" in line
        assert snapshot(finished_run) == before  # every file byte-identical, none added or removed


def test_a_run_dir_that_is_a_file_is_a_one_line_error(tmp_path, tiny_model_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    before = snapshot(path)
    for extra in ([], ["--overwrite"]):
        assert main(train_args(tiny_model_path, path, *extra)) == 2
        assert "is a file" in one_line_error(capsys)
    assert snapshot(path) == before


def test_overwrite_never_clears_a_directory_that_holds_no_run(tmp_path, tiny_model_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    assert main(train_args(tiny_model_path, tmp_path, "--overwrite")) == 2
    assert "holds no covgym run" in one_line_error(capsys)
    assert snapshot(tmp_path) == before


def test_resume_refuses_another_config_and_continues_its_own(finished_run, tiny_model_path, tmp_path, capsys):
    capsys.readouterr()
    before = snapshot(finished_run)
    other = tmp_path / "other.yaml"
    other.write_text("algo: rloo\nlr: 0.5\n")
    for args in (["train", "--resume", str(finished_run), "--algo", "rloo"],
                 ["train", "--resume", str(finished_run), "--config", str(other)],
                 ["train", "--resume", str(finished_run), "--overwrite"]):
        assert main(args) == 2
        one_line_error(capsys)
        assert snapshot(finished_run) == before
    same = tmp_path / "same.yaml"
    same.write_text("algo: grpo\nprompts_per_step: 2\n")  # agrees with the run: accepted
    assert main(["train", "--resume", str(finished_run), "--config", str(same), "--steps", "3",
                 "--progress", "false"]) == 0
    steps = [json.loads(line)["step"] for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((finished_run / "config.json").read_text())["steps"] == 3


def test_overwrite_clears_the_previous_run_first(tmp_path, tiny_model_path, capsys):
    run_dir = tmp_path / "run"
    assert main(train_args(tiny_model_path, run_dir, "--steps", "3", "--keep-checkpoints", "5")) == 0
    assert (run_dir / "checkpoints" / "step-00000003.pt").exists()
    assert main(train_args(tiny_model_path, run_dir, "--algo", "rloo", "--overwrite")) == 0
    assert json.loads((run_dir / "config.json").read_text())["algo"] == "rloo"
    assert not (run_dir / "checkpoints" / "step-00000003.pt").exists()  # nothing of the old run is left behind
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_the_trainer_itself_refuses(tmp_path):
    """The policy lives below the CLI: a Python user's Trainer is refused the same way, before any model loads."""
    from covgym.train.trainer import Trainer

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(TrainConfig(algo="grpo", run_dir=str(run_dir)).to_dict()))
    with pytest.raises(RunDirError, match="is not empty"):
        Trainer(TrainConfig(algo="rloo", run_dir=str(run_dir)))
    with pytest.raises(RunDirError, match="algo: 'grpo' there, 'rloo' here"):
        Trainer(TrainConfig(algo="rloo", run_dir=str(run_dir)), resume=True)
    with pytest.raises(RunDirError, match="contradict"):
        Trainer(TrainConfig(run_dir=str(run_dir)), resume=True, overwrite=True)


def test_checks_only_read_and_clear_deletes_only_runs(tmp_path):
    assert not is_taken(tmp_path / "missing") and not is_taken(tmp_path)
    check_run_dir(tmp_path / "missing")
    check_run_dir(tmp_path)  # empty: fine
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    assert is_taken(tmp_path)
    with pytest.raises(RunDirError):
        check_run_dir(tmp_path)
    check_run_dir(tmp_path, overwrite=True)
    assert (tmp_path / "metrics.jsonl").exists()  # checking never deletes
    clear_run_dir(tmp_path)
    assert not tmp_path.exists()
    plain = tmp_path.parent / "plain"
    plain.mkdir()
    (plain / "data.csv").write_text("1")
    with pytest.raises(RunDirError):
        clear_run_dir(plain)
    with pytest.raises(RunDirError, match="no covgym run to resume"):
        check_run_dir(plain, resume=True)
    assert (plain / "data.csv").exists()


def test_config_differences_read_missing_keys_as_defaults_and_ignore_what_may_change():
    stored = TrainConfig(steps=5).to_dict()
    del stored["optim"]["warmup_steps"]  # a run written before that key existed had its default
    wanted = TrainConfig(steps=9).to_dict()
    assert config_differences(stored, wanted, ignored={"steps"}) == []
    wanted["optim"]["lr"] = 0.5
    wanted["algo_params"] = {"clip_ratio": 0.3}
    assert [key for key, _, _ in config_differences(stored, wanted, ignored={"steps"})] == ["algo_params",
                                                                                             "optim.lr"]


def test_a_partial_config_is_compared_on_the_keys_it_sets(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(algo_params={"clip_ratio": 0.3}).to_dict()))
    check_partial_config(tmp_path, {"algo": "grpo", "steps": 999, "algo_params": {"clip_ratio": 0.3}}, "f.yaml")
    with pytest.raises(RunDirError, match="optim.lr: 0.0 in the run, 0.5 in f.yaml"):
        check_partial_config(tmp_path, {"lr": 0.5}, "f.yaml")  # flat keys too
    with pytest.raises(RunDirError, match="algo_params.clip_ratio"):
        check_partial_config(tmp_path, {"algo_params": {"clip_ratio": 0.2}}, "f.yaml")
