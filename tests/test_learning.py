"""The real thing: a fixed-seed short GRPO run on the tiny model raises held-out accuracy and lowers entropy."""

from __future__ import annotations

import pytest

from covgym.demo import demo_config
from covgym.train.config import ModelConfig
from covgym.train.trainer import Trainer


@pytest.mark.slow
def test_short_grpo_run_raises_held_out_accuracy(tmp_path, tiny_model_path):
    config = demo_config(steps=60, run_dir=str(tmp_path / "run"), seed=0)
    config = config.replace(eval_problems=256, progress=False, model=ModelConfig(model=str(tiny_model_path)))
    result = Trainer(config).train()
    before, after = result.eval_before, result.eval_after
    # Same 256 held-out problems x 4 samples before and after; 60 steps of 16 x 8 rollouts. The gain must exceed
    # the evaluation's own 95 % half-width: a fixed margin tuned on one CPU failed on another, where the built-in
    # model (SFT-trained at first use) and the run's float rounding differ (+0.07 seen on AVX-512, +0.04-0.05 on
    # AVX2 with 128 problems, whose half-width of 0.043 left no room for a change that only reorders float sums).
    assert after["accuracy"] - before["accuracy"] > before["accuracy_ci95"], (before, after)
    assert after["entropy_mean"] < before["entropy_mean"], (before, after)
    correlations = [r["dH_corr"] for r in result.history if r.get("dH_corr") is not None]
    assert sum(correlations) / len(correlations) > 0.8  # first-order entropy law on the real model
