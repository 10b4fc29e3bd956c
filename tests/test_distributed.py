"""Data parallel: one update on a fixed global batch is the same with 2 gloo processes as with one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from distributed_helpers import run_ranks

from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig

GLOBAL_GROUPS, GROUP_SIZE, LENGTH = 4, 4, 14
CASES = {
    "grpo": {},
    "clip_cov": {"clip_cov_ratio": 0.2, "clip_cov_lb": -10.0, "clip_cov_ub": 10.0},
    "kl_cov": {"kl_cov_ratio": 0.2, "ppo_kl_coef": 1.0},
}


def make_config(model_dir: str, algo: str, run_dir: str) -> TrainConfig:
    return TrainConfig(algo=algo, algo_params=CASES[algo], steps=1, run_dir=run_dir, eval_problems=0,
                       progress=False, entropy_dynamics=False, model=ModelConfig(model=model_dir),
                       rollout=RolloutConfig(prompts_per_step=GLOBAL_GROUPS, group_size=GROUP_SIZE),
                       optim=OptimConfig(lr=1e-2, mini_batches=2, ppo_epochs=2))


def fixed_global_batch(policy):
    """The same synthetic batch on every process: random tokens, ragged responses, rewards with signal."""
    from covgym.core.batch import RolloutBatch
    from covgym.train.rollout import score_batch

    generator = torch.Generator().manual_seed(1234)
    b = GLOBAL_GROUPS * GROUP_SIZE
    input_ids = torch.randint(3, 100, (b, LENGTH), generator=generator)
    lengths = torch.randint(8, LENGTH + 1, (b,), generator=generator)
    attention = (torch.arange(LENGTH)[None] < lengths[:, None]).long()
    response = ((torch.arange(LENGTH)[None] >= 5) & (attention > 0)).float()
    rewards = torch.randint(0, 2, (b,), generator=generator).float()
    batch = RolloutBatch(input_ids=input_ids, attention_mask=attention, response_mask=response,
                         old_log_probs=torch.zeros(b, LENGTH), rewards=rewards,
                         group_ids=torch.arange(GLOBAL_GROUPS).repeat_interleave(GROUP_SIZE),
                         entropies=torch.zeros(b, LENGTH), info=[{} for _ in range(b)])
    return score_batch(policy, batch)


def run_update(model_dir: str, algo: str, run_dir: str, rank: int, world: int
               ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The parameters after one update on this rank's shard of the fixed batch, and the update's metrics."""
    from covgym.train.trainer import Trainer

    torch.manual_seed(0)
    trainer = Trainer(make_config(model_dir, algo, run_dir))
    batch = fixed_global_batch(trainer.policy)
    shard = batch.batch_size // world
    metrics = trainer.update(batch.select(list(range(rank * shard, (rank + 1) * shard))), step=1)
    return {name: p.detach().clone() for name, p in trainer.policy.model.named_parameters()}, metrics


def _worker(rank: int, world: int, model_dir: str, algo: str, out: str) -> None:
    parameters, metrics = run_update(model_dir, algo, out + "/run", rank, world)
    torch.save((parameters, metrics), f"{out}/rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(CASES))
def test_two_gloo_processes_match_one(algo, random_model_dir, tmp_path):
    import covgym.algorithms as algorithms

    if algo not in algorithms.names():
        pytest.skip(f"{algo} not registered")
    single, single_metrics = run_update(str(random_model_dir), algo, str(tmp_path / "single"), 0, 1)
    run_ranks(_worker, (str(random_model_dir), algo, str(tmp_path)), tmp_path)
    (rank0, metrics0), (rank1, metrics1) = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for name, want in single.items():
        assert torch.allclose(rank0[name], rank1[name], atol=0, rtol=0), f"ranks disagree on {name}"
        difference = float((rank0[name] - want).abs().max())
        assert difference < 2e-5, f"{algo}: {name} differs from 1 process by {difference}"
    assert metrics0 == metrics1  # every rank logs the same record
    for key in ("pg_loss", "loss"):  # a rank's loss is its share of the mini-batch's: summed, not averaged
        assert abs(metrics0[key] - single_metrics[key]) < 1e-5, (key, metrics0[key], single_metrics[key])


def test_the_update_changes_parameters_so_the_comparison_means_something(random_model_dir, tmp_path):
    from covgym.models.policy import Policy

    before = dict(Policy.from_pretrained(str(random_model_dir), show_progress=False).model.named_parameters())
    after, _ = run_update(str(random_model_dir), "grpo", str(tmp_path / "r"), 0, 1)
    assert any(not torch.allclose(before[n].detach(), after[n]) for n in after)
