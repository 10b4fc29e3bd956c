"""Like-for-like comparisons: bench refuses unequal budgets, plot says where hand-made runs differ."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from covgym.benchmark import sweep as bench
from covgym.benchmark.fairness import differing_settings, unfair_comparison_note
from covgym.benchmark.sweep import BenchEnv, BenchSpec
from covgym.train.config import ConfigError


def _run(directory: Path, algo: str, lr: float, mini_batches: int, seed: int = 0) -> Path:
    directory.mkdir(parents=True)
    config = {"algo": algo, "algo_params": {}, "seed": seed, "run_dir": str(directory), "steps": 10,
              "optim": {"lr": lr, "mini_batches": mini_batches, "ppo_epochs": 1},
              "rollout": {"prompts_per_step": 8, "group_size": 8}, "model": {"model": "tiny"}}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_runs_that_share_their_budget_are_a_fair_comparison(tmp_path):
    runs = [_run(tmp_path / "a", "grpo", 1e-4, 4, seed=0), _run(tmp_path / "b", "kl_cov", 1e-4, 4, seed=1)]
    assert unfair_comparison_note(runs) is None


def test_different_update_budgets_are_named(tmp_path):
    runs = [_run(tmp_path / "grpo", "grpo", 1e-4, 1), _run(tmp_path / "klcov", "kl_cov", 1e-4, 4)]
    note = unfair_comparison_note(runs)
    assert note is not None and "optim.mini_batches" in note and "grpo=1" in note and "klcov=4" in note
    assert list(differing_settings({"x": {"optim": {"lr": 1}}, "y": {"optim": {"lr": 2}}})) == ["optim.lr"]


def test_plot_command_warns_about_unequal_budgets(tmp_path, capsys):
    from covgym.cli import main

    runs = [_run(tmp_path / "grpo", "grpo", 1e-4, 1), _run(tmp_path / "klcov", "kl_cov", 1e-4, 4)]
    for run in runs:
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "entropy_mean": 1.0 / s,
                                                               "reward_mean": 0.1 * s}) + "\n" for s in (1, 2, 3)))
    main(["plot", *map(str, runs), "--out", str(tmp_path / "figures")])
    assert "not a like-for-like comparison" in capsys.readouterr().out


def test_bench_refuses_a_sweep_with_unequal_budgets(monkeypatch):
    env = BenchEnv("covgym/Arithmetic-v0", steps=2)
    spec = BenchSpec(methods=("grpo", "kl_cov"), seeds=(0,), envs=(env,))
    bench.check_equal_budgets(spec, env)  # method hyperparameters may differ, nothing else
    auto = BenchSpec(methods=("grpo", "kl_cov"), seeds=(0,), envs=(env,), mini_batches=0)
    bench.check_equal_budgets(auto, env)  # auto mini-batches are the same for every algorithm
    original = BenchSpec.run_config

    def one_update_for_grpo(self, env, method, seed, run_dir):
        config = original(self, env, method, seed, run_dir)
        return config.replace(optim=replace(config.optim, mini_batches=1)) if method == "grpo" else config

    monkeypatch.setattr(BenchSpec, "run_config", one_update_for_grpo)
    with pytest.raises(ConfigError, match="optim.mini_batches"):
        bench.check_equal_budgets(spec, env)
