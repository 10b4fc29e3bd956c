"""End to end on the built-in tiny model: every algorithm trains, parameters move, metrics are finite."""

from __future__ import annotations

import json
import math

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.train.config import EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig
from covgym.train.trainer import Trainer

REQUIRED_KEYS = ("step", "reward_mean", "accuracy", "entropy_mean", "approx_kl", "clip_frac", "grad_norm",
                 "response_length_mean", "tokens_per_s", "time_generate_s", "time_score_s", "time_update_s")


def small_config(tmp_path, model: str, algo: str = "grpo", steps: int = 2, **overrides) -> TrainConfig:
    return TrainConfig(algo=algo, steps=steps, run_dir=str(tmp_path / algo), eval_problems=4, eval_samples=2,
                       progress=False, model=ModelConfig(model=model),
                       rollout=RolloutConfig(prompts_per_step=4, group_size=4, max_new_tokens=6),
                       optim=OptimConfig(lr=1e-4, mini_batches=2), **overrides)


def parameters(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.policy.model.parameters()]


@pytest.mark.parametrize("algo", algorithms.names())
def test_every_algorithm_trains_the_tiny_model(algo, tmp_path, tiny_model_path):
    trainer = Trainer(small_config(tmp_path, str(tiny_model_path), algo))
    before = parameters(trainer)
    result = trainer.train()
    after = parameters(trainer)
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "no parameter changed"
    assert len(result.history) == 2
    for record in result.history:
        for key in REQUIRED_KEYS:
            assert key in record, key
        for key, value in record.items():
            if isinstance(value, float) and key not in ("dH_ratio",):
                assert math.isfinite(value) or key.startswith(("cov_", "polarity_", "corr_", "dH_")), (key, value)


def test_run_directory_contract(tmp_path, tiny_model_path):
    config = small_config(tmp_path, str(tiny_model_path), steps=3, save_every=1, keep_checkpoints=2)
    result = Trainer(config).train()
    run = result.run_dir
    written = json.loads((run / "config.json").read_text())
    assert written["algo"] == "grpo" and written["steps"] == 3 and written["optim"]["lr"] == 1e-4
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert "eval_accuracy" in lines[-1]
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002.pt", "step-00000003.pt"]  # keep_checkpoints=2
    assert (run / "final_model" / "config.json").exists()


def test_group_members_share_their_problem(tmp_path, tiny_model_path):
    trainer = Trainer(small_config(tmp_path, str(tiny_model_path)))
    batch, _ = trainer.rollout(step=1)
    for group in batch.group_ids.unique():
        answers = {batch.info[i]["answer"] for i in range(batch.batch_size) if batch.group_ids[i] == group}
        assert len(answers) == 1
    assert len({info["expression"] for info in batch.info}) > 1  # different groups, different problems
    prompt_positions = batch.attention_mask.bool() & (batch.response_mask == 0)
    assert prompt_positions[:, 0].all()  # every sequence starts with its prompt, never trained on


def test_same_seed_same_run(tmp_path, tiny_model_path):
    first = Trainer(small_config(tmp_path / "a", str(tiny_model_path))).train().history
    second = Trainer(small_config(tmp_path / "b", str(tiny_model_path))).train().history
    keys = ("reward_mean", "entropy_mean", "pg_loss", "grad_norm")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]


def test_kl_cov_without_off_policy_minibatches_warns(tmp_path, tiny_model_path):
    if "kl_cov" not in algorithms.names():
        pytest.skip("kl_cov not registered")
    config = small_config(tmp_path, str(tiny_model_path), "kl_cov")
    config = config.replace(optim=OptimConfig(lr=1e-4, mini_batches=1))
    with pytest.warns(UserWarning, match="no effect on a fully on-policy mini-batch"):
        Trainer(config)


def test_metric_groups_may_not_share_a_name():
    from covgym.measure.training_metrics import merge_disjoint

    assert merge_disjoint({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(KeyError, match="cov_mean"):
        merge_disjoint({"cov_mean": 0.046}, {"cov_mean": -0.065})


def test_logged_cov_mean_is_the_documented_batch_statistic(tmp_path, tiny_model_path, monkeypatch):
    """docs/entropy.md: ``cov_mean`` is the whole batch's Cov(log π_old, A); several mini-batches must not
    overwrite it with a loss's per-mini-batch value (which is logged as ``minibatch_cov_mean``)."""
    from covgym.measure.entropy_dynamics import covariance_stats

    config = small_config(tmp_path, str(tiny_model_path), "kl_cov", steps=1)
    config = config.replace(optim=OptimConfig(lr=1e-3, mini_batches=4))
    trainer = Trainer(config)
    seen = {}
    original = trainer.update

    def update(batch, step):
        advantages = trainer.algorithm.advantages(batch)
        seen["expected"] = covariance_stats(batch.old_log_probs, advantages, batch.response_mask)["cov_mean"]
        return original(batch, step)

    monkeypatch.setattr(trainer, "update", update)
    record = trainer.train().history[0]
    assert record["cov_mean"] == pytest.approx(seen["expected"], rel=1e-6, abs=1e-9)
    assert "minibatch_cov_mean" in record
    assert "dH_actual_mean_last" in record  # the probe also measures the last, off-policy mini-batch
