"""covgym's multi-turn envs inside TRL (``covgym.adapters.trl_multiturn``): the rollout_func's output is covgym's own
episodes (tokens, env-token mask, log-probs, rewards), env tokens get no loss and no gradient in
``CovgymGRPOTrainer``, and ``covgym train --engine trl`` trains ``covgym/DigitSumFeedback-v0`` into a run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from covgym.adapters.trl_multiturn import (EpisodeReward, EpisodeRollout, episode_dataset, episode_rows,  # noqa: E402
                                           prompt_seed_table)
from covgym.models.policy import Policy, SamplingParams  # noqa: E402
from covgym.train.rollout import collect_rollout  # noqa: E402
from covgym.train.trainer import derive_seed  # noqa: E402

ENV = "covgym/DigitSumFeedback-v0"
PROMPTS, GROUP, SEED, MAX_TURNS = 3, 4, 5, 3
SAMPLING = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10)


class _Trainer:
    """What the rollout_func reads off a ``CovgymGRPOTrainer``."""

    def __init__(self, env_seeds, step=1):
        self.covgym_env_seeds, self.covgym_step = env_seeds, step


@pytest.fixture(scope="module")
def policy():
    return Policy.from_pretrained("tiny-digits", device="cpu", show_progress=False)


@pytest.fixture(scope="module")
def rows():
    return episode_rows(ENV, PROMPTS, seed=SEED)


def _rollout(policy, **kwargs):
    return EpisodeRollout(ENV, {}, policy, SAMPLING, seed=SEED, max_turns=MAX_TURNS, **kwargs)


def test_rollout_output_is_covgyms_own_episodes(policy, rows):
    prompts = [row["prompt"] for row in rows for _ in range(GROUP)]
    seeds = [row["env_seed"] for row in rows for _ in range(GROUP)]
    rollout = _rollout(policy)
    out = rollout(prompts, _Trainer(seeds, step=2))
    # covgym's own rollout of the same problems with the same per-step seed
    envs = rollout._envs(len(seeds))
    batch, _ = collect_rollout(policy, envs, seeds, [i // GROUP for i in range(len(seeds))], SAMPLING,
                               seed=derive_seed(SEED, 2, "rollout"), max_turns=MAX_TURNS)
    assert sum(1 for mask in out["env_mask"] if 0 in mask) >= 2, "the batch must have episodes with env replies"
    for row in range(len(seeds)):
        start, length = int(batch.prompt_lengths[row]), len(out["completion_ids"][row])
        assert out["prompt_ids"][row] == batch.input_ids[row, :start].tolist()
        assert out["completion_ids"][row] == batch.input_ids[row, start:start + length].tolist()
        assert int(batch.attention_mask[row].sum()) == start + length
        assert out["env_mask"][row] == batch.response_mask[row, start:start + length].long().tolist()
        torch.testing.assert_close(torch.tensor(out["logprobs"][row]), batch.old_log_probs[row, start:start + length])
        assert out["env_reward"][row] == pytest.approx(float(batch.rewards[row]))
        assert out["env_turns"][row] == (len(batch.info[row]["texts"]) + 1) // 2
        # the completion is attempt + checker's reply + retry ..., the reply exactly where env_mask is 0
        texts = batch.info[row]["texts"]
        assert policy.decode(out["completion_ids"][row]) == "".join(texts)
        replies = [policy.decode([t for t, m in zip(out["completion_ids"][row], out["env_mask"][row]) if m == 0])]
        assert replies[0] == "".join(texts[1::2])
        # and the reward is the env's, replaying the attempts
        env = envs[0]
        env.reset(seed=seeds[row])
        replayed = sum(env.step(attempt)[1] for attempt in texts[0::2])
        assert out["env_reward"][row] == pytest.approx(replayed)
        assert out["env_correct"][row] == (replayed > 0)
    assert EpisodeReward(ENV)(prompts, ["x"] * len(prompts), env_reward=out["env_reward"]) == out["env_reward"]


def test_rollout_finds_seeds_from_the_table_and_refuses_a_wrong_seed(policy, rows):
    rollout = _rollout(policy, prompt_seeds=prompt_seed_table(rows))
    prompts = [row["prompt"] for row in rows]
    by_table = rollout(prompts, object())  # a trainer that keeps no seeds: the prompt table
    by_trainer = _rollout(policy)(prompts, _Trainer([row["env_seed"] for row in rows]))
    assert by_table["prompt_ids"] == by_trainer["prompt_ids"]
    with pytest.raises(ValueError, match="no env_seed"):
        _rollout(policy)(prompts, object())
    with pytest.raises(ValueError, match="does not re-create the prompt"):
        _rollout(policy)(prompts, _Trainer([rows[1]["env_seed"], rows[0]["env_seed"], rows[2]["env_seed"]]))


def test_env_tokens_get_no_loss_and_no_gradient(tmp_path):
    from trl import GRPOConfig

    import covgym.algorithms as algorithms
    from covgym.adapters.trl_trainer import CovgymGRPOTrainer

    policy = Policy.from_pretrained("tiny-digits", device="cpu", show_progress=False)
    dataset = episode_dataset(ENV, PROMPTS, seed=SEED)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=PROMPTS * GROUP, steps_per_generation=1,
                      num_generations=GROUP, max_steps=1, use_cpu=True, bf16=False, report_to="none",
                      save_strategy="no", disable_tqdm=True, seed=SEED, remove_unused_columns=False)
    rollout = _rollout(policy)
    trainer = CovgymGRPOTrainer(model=policy.model, reward_funcs=EpisodeReward(ENV), args=args, train_dataset=dataset,
                                processing_class=policy.tokenizer, algorithm=algorithms.get("grpo")(), policy=policy,
                                seed=SEED, entropy_dynamics_every=0, rollout_func=rollout)
    trainer.model.train()
    inputs = [dict(row) for row in dataset for _ in range(GROUP)]
    output = trainer._generate_and_score_completions(inputs)
    assert trainer.covgym_env_seeds == [row["env_seed"] for row in inputs]
    mask = output["completion_mask"] * output["tool_mask"]
    env_tokens = (output["completion_mask"] == 1) & (output["tool_mask"] == 0)
    assert env_tokens.sum() > 0 and (mask.sum(1) > 0).all()
    for row, episode_mask in enumerate(rollout.last_output["env_mask"]):
        assert output["tool_mask"][row, :len(episode_mask)].tolist() == episode_mask
    assert torch.equal(trainer._last_rewards.cpu(), torch.tensor(rollout.last_output["env_reward"]))
    assert trainer._rollout["metrics"]["turns"] >= 2

    original = trainer._get_per_token_logps_and_entropies
    leaves = []

    def leaf_log_probs(*a, shift=None, **k):
        log_probs, entropies, extra = original(*a, **k)
        leaf = log_probs.detach().clone().requires_grad_(True)
        leaves.append(leaf)
        return (leaf if shift is None else leaf + shift), entropies, extra

    def loss_with(shift):
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: leaf_log_probs(*a, shift=shift, **k)
        old = output["old_per_token_logps"]
        inputs_off = {**output, "old_per_token_logps": old}
        trainer._step = 1  # an off-policy optimizer step: old log-probs from the rollout
        trainer.updates_per_rollout = 2
        try:
            loss = trainer._compute_loss(trainer.model, inputs_off)
        finally:
            trainer._get_per_token_logps_and_entropies = original
        loss.backward()
        return loss.detach(), leaves[-1].grad

    seen = {}
    policy_loss = trainer.algorithm.policy_loss

    def capture(log_probs, old, advantages, mask, **kwargs):
        seen.update(mask=mask.detach().clone(), tokens=kwargs["global_token_count"])
        return policy_loss(log_probs, old, advantages, mask, **kwargs)

    trainer.algorithm.policy_loss = capture
    loss, grad = loss_with(None)
    assert torch.equal(seen["mask"], mask.float()) and seen["tokens"] == float(mask.sum())  # env tokens: not counted
    assert grad[env_tokens].abs().max() == 0.0
    assert grad[mask.bool()].abs().max() > 0.0
    noise = torch.randn(env_tokens.shape, generator=torch.Generator().manual_seed(0)) * 3.0
    shifted_loss, _ = loss_with(noise * env_tokens)  # env-token log-probs changed: the loss is not
    assert torch.equal(shifted_loss, loss)
    model_loss, _ = loss_with(noise * mask)  # the same change on model tokens does change it (the check can fail)
    assert not torch.equal(model_loss, loss)


def _cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    return subprocess.run([sys.executable, "-m", "covgym", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_cli_trains_a_multi_turn_env_through_trl(tmp_path):
    run_dir = tmp_path / "run"
    result = _cli("train", "--engine", "trl", "--model", "tiny-digits", "--env", ENV, "--steps", "2", "--seed", "3",
                  "--prompts-per-step", "4", "--group-size", "4", "--mini-batches", "2", "--max-new-tokens", "10",
                  "--max-turns", "3", "--eval-problems", "8", "--eval-samples", "2", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert 0.0 <= record["reward_mean"] <= 1.0 and 0.0 <= record["accuracy"] <= 1.0
        assert 1 <= record["turns"] <= 3
        assert record["pg_loss"] == record["pg_loss"]  # finite, not None
    assert any(record["turns"] >= 2 for record in records)
    assert "eval_accuracy" in records[-1]
    assert json.loads((run_dir / "trl.json").read_text())["engine"] == "trl"
    train = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    train = [s for s in train if s["split"] == "train"]
    assert sorted({s["step"] for s in train}) == [1, 2]
    for sample in train:  # the model's turns carry its entropy; the checker's replies are the env's (None)
        assert sample["tokens"][0][1] is not None
    assert any(entropy is None for s in train for _, entropy in s["tokens"])
    plot = _cli("plot", str(run_dir))
    assert plot.returncode == 0, plot.stderr[-2000:]
    evaluated = _cli("eval", "--model", str(run_dir / "final_model"), "--env", ENV, "--problems", "4",
                     "--samples", "2")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
