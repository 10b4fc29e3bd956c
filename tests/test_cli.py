"""CLI: listings, help on every command, one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from covgym.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "covgym", *args], capture_output=True, text=True, timeout=300)


def test_envs_and_algos_list_what_is_registered(capsys):
    import covgym.algorithms as algorithms
    from covgym.envs import describe

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert all(env_id in out for env_id in describe())
    assert main(["algos", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in algorithms.names())
    assert "--clip-ratio" in out


@pytest.mark.parametrize("command", ["train", "eval", "demo", "envs", "algos", "plot", "bench"])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_train_help_lists_every_config_field_and_algorithm_hyperparameter(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--env", "--algo", "--model", "--steps", "--seed", "--run-dir", "--save-every", "--resume",
                 "--group-size", "--clip-ratio", "--entropy-coeff"):
        assert flag in out


@pytest.mark.parametrize("args, expected", [
    (["--env", "covgym/Nope-v0"], "unknown environment 'covgym/Nope-v0'; known: covgym/Arithmetic-v0"),
    (["--algo", "nope"], "unknown algorithm 'nope'; known: "),
    (["--model", "/does/not/exist"], "model '/does/not/exist' not found"),
    (["--prompts-per-step", "-1"], "prompts_per_step: must be >= 1 (or 0 = auto), got -1"),
    (["--group-size", "-3"], "group_size: must be >= 1 (or 0 = auto), got -3"),
    (["--group-size", "1"], "group size of 1"),
    (["--clip-ratio-c", "0.5"], "clip_ratio_c must be > 1.0"),
])
def test_bad_input_gives_one_line_error_and_exit_code_2(args, expected, capsys, tmp_path):
    code = main(["train", "--run-dir", str(tmp_path / "r"), "--steps", "1", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_hyperparameter_of_another_algorithm_is_rejected(capsys, tmp_path):
    import covgym.algorithms as algorithms

    if "kl_cov" not in algorithms.names():
        pytest.skip("kl_cov not registered")
    code = main(["train", "--algo", "grpo", "--kl-cov-ratio", "0.1", "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert "--kl-cov-ratio not read by --algo grpo" in capsys.readouterr().err
    # a knob that no chosen part reads names the parts that do read it, in one line
    code = main(["train", "--clip-ratio", "0.5", "--algo", "kl_cov", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--clip-ratio not read by --algo kl_cov" in err and "ppo_clip" in err and "clip_cov" in err
    assert not (tmp_path / "r").exists()


def test_module_entry_point_reports_errors_without_traceback():
    result = run_cli("train", "--algo", "nope")
    assert result.returncode == 2
    assert "unknown algorithm 'nope'" in result.stderr and "Traceback" not in result.stderr
