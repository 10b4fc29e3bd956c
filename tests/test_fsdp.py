"""FSDP (``--fsdp``): 2 gloo processes with sharded layers make the update one process makes, and a whole run works."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from distributed_helpers import run_ranks
from test_distributed import CASES, fixed_global_batch, make_config, run_update

from covgym.train.config import EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig


def _fsdp_update(rank: int, world: int, model_dir: str, algo: str, out: str) -> None:
    from covgym.distributed import sharding
    from covgym.train.trainer import Trainer

    torch.manual_seed(0)
    config = make_config(model_dir, algo, out + "/run")
    trainer = Trainer(config.replace(model=dataclasses.replace(config.model, fsdp=True)))
    assert any(sharding.is_sharded(p) for p in trainer.policy.model.parameters())
    batch = fixed_global_batch(trainer.policy)
    shard = batch.batch_size // world
    trainer.update(batch.select(list(range(rank * shard, (rank + 1) * shard))), step=1)
    layers = sharding.decoder_layers(trainer.policy.model)
    with torch.no_grad():  # a forward gathers each layer's weights and must drop them again afterwards
        trainer.policy.score(batch.input_ids[:2], batch.attention_mask[:2])
    assert all(sharding.is_sharded(p) for layer in layers for p in layer.parameters())
    state, _ = sharding.full_state(trainer.policy.model)  # gathered onto rank 0 only
    if rank == 0:
        torch.save(state, f"{out}/rank0.pt")


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "kl_cov"])
def test_fsdp_update_matches_one_process(algo, random_model_dir, tmp_path):
    single, _ = run_update(str(random_model_dir), algo, str(tmp_path / "single"), 0, 1)
    run_ranks(_fsdp_update, (str(random_model_dir), algo, str(tmp_path)), tmp_path)
    rank0 = torch.load(tmp_path / "rank0.pt")
    assert set(rank0) >= set(single)
    for name, want in single.items():
        difference = float((rank0[name] - want).abs().max())
        assert difference < 2e-5, f"{algo} ({CASES[algo]}): {name} differs from 1 process by {difference}"


def _fsdp_run(rank: int, world: int, config: TrainConfig, resume: bool) -> None:
    from covgym.train.trainer import Trainer

    Trainer(config, resume=resume).train()


@pytest.mark.slow
def test_fsdp_multi_turn_run_checkpoints_resumes_and_saves_a_loadable_model(random_model_dir, tmp_path):
    """Ranks whose episodes end at different turns, evaluation, checkpoints, resume: nothing may deadlock.

    The entropy bonus moves the weights even when the untrained model earns no reward.
    """
    from covgym.models.policy import Policy

    run_dir = tmp_path / "run"
    config = TrainConfig(algo="entropy_bonus", algo_params={"entropy_coeff": 1.0}, steps=2, run_dir=str(run_dir), save_every=1, eval_problems=4, eval_samples=2,
                         progress=False, tensorboard=False,
                         model=ModelConfig(model=str(random_model_dir), fsdp=True, dtype="bfloat16"),
                         env=EnvConfig("covgym/NumberGuess-v0"),
                         rollout=RolloutConfig(prompts_per_step=2, group_size=2, max_new_tokens=6, max_turns=3),
                         optim=OptimConfig(lr=1e-2))
    run_ranks(_fsdp_run, (config, False), tmp_path)
    run_ranks(_fsdp_run, (config.replace(steps=3), True), tmp_path)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "eval_accuracy" in records[-1]
    assert json.loads((run_dir / "final_model" / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = Policy.from_pretrained(str(run_dir / "final_model"), show_progress=False)
    original = Policy.from_pretrained(str(random_model_dir), show_progress=False)
    changed = [not torch.equal(a, b.float()) for a, b in zip(reloaded.model.parameters(), original.model.parameters())]
    assert any(changed)


def _uneven_episodes(rank: int, world: int, model_dir: str, out: str) -> None:
    import gymnasium as gym

    from covgym.distributed import sharding
    from covgym.models.policy import Policy, SamplingParams
    from covgym.train.rollout import run_episodes

    policy = Policy.from_pretrained(model_dir, show_progress=False, share_prompts=False)
    sharding.shard_layers(policy.model)
    policy.synced = True
    if rank == 0:  # single-turn: done after one turn
        envs = [gym.make("covgym/Arithmetic-v0") for _ in range(2)]
    else:  # the untrained model never says a valid guess, so these run all three turns
        envs = [gym.make("covgym/NumberGuess-v0") for _ in range(3)]
    episodes = run_episodes(policy, envs, list(range(len(envs))), SamplingParams(max_new_tokens=4), seed=rank,
                            max_turns=3)
    turns = [sum(trainable for _, trainable in e.segments) for e in episodes]
    (Path(out) / f"turns{rank}.json").write_text(json.dumps(turns))


@pytest.mark.slow
def test_ranks_whose_episodes_end_at_different_turns_stay_in_step(random_model_dir, tmp_path):
    run_ranks(_uneven_episodes, (str(random_model_dir), str(tmp_path)), tmp_path)
    assert json.loads((tmp_path / "turns0.json").read_text()) == [1, 1]
    assert max(json.loads((tmp_path / "turns1.json").read_text())) == 3


def test_fsdp_alone_says_how_to_launch(random_model_dir, tmp_path):
    from covgym.train.trainer import Trainer

    config = TrainConfig(run_dir=str(tmp_path / "r"), model=ModelConfig(model=str(random_model_dir), fsdp=True))
    with pytest.raises(ValueError, match="fsdp: needs several processes.*torchrun"):
        Trainer(config)
