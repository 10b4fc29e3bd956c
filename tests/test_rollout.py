"""Rollout: multi-turn episodes become one sequence whose environment tokens are never trained on."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import covgym  # noqa: F401
from covgym.models.policy import SamplingParams
from covgym.train.config import EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig
from covgym.train.rollout import collect_rollout
from covgym.train.trainer import Trainer


class ScriptedPolicy:
    """Stands in for ``Policy``: replies from a script, tokenises with the real character tokenizer."""

    def __init__(self, policy, script: list[str]):
        self.inner, self.script, self.turn = policy, script, 0
        self.pad_token_id = policy.pad_token_id

    def encode_prompt(self, text):
        return self.inner.encode_prompt(text)

    def encode_observation(self, text):
        return self.inner.encode_observation(text)

    def decode(self, ids):
        return self.inner.decode(ids)

    def generate(self, prompts, params, stop_strings=(), seed=None):
        reply = self.script[min(self.turn, len(self.script) - 1)]
        self.turn += 1
        return [self.inner.encode_observation(reply) for _ in prompts]

    def score(self, input_ids, attention_mask, prompt_lengths=None, positions=None):
        return self.inner.score(input_ids, attention_mask, prompt_lengths, positions)


def test_tool_output_tokens_have_response_mask_zero(random_policy):
    envs = [gym.make("covgym/Calculator-v0", digits=1, num_terms=2, operations="+")]
    envs[0].reset(seed=3)
    answer = envs[0].unwrapped.problem.answer
    expression = envs[0].unwrapped.problem.metadata["expression"]
    script = [f"<calc>{expression}</calc>", f"<answer>{answer}</answer>"]
    policy = ScriptedPolicy(random_policy, script)
    batch, stats = collect_rollout(policy, envs, [3], [0], SamplingParams(max_new_tokens=32), seed=0)
    assert stats.turns == 2 and batch.rewards.tolist() == [1.0]
    ids, mask = batch.input_ids[0], batch.response_mask[0]
    text_of = lambda selector: random_policy.decode(ids[selector].tolist())  # noqa: E731
    trained = text_of(mask > 0)
    assert trained == "".join(script)  # exactly the policy's own turns
    untrained = text_of((mask == 0) & (batch.attention_mask[0] > 0))
    assert f"<result>{answer}</result>" in untrained and "Compute:" in untrained
    assert (batch.old_log_probs[0][mask == 0] == 0).all() and (batch.old_log_probs[0][mask > 0] < 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("env_id, env_kwargs", [
    ("covgym/Calculator-v0", {"digits": 1, "num_terms": 2, "operations": "+", "max_turns": 2}),
    ("covgym/Dataset-v0", {}),
])
def test_tiny_model_trains_on_agentic_and_dataset_envs(env_id, env_kwargs, tmp_path, tiny_model_path):
    config = TrainConfig(steps=2, run_dir=str(tmp_path / "run"), eval_problems=2, eval_samples=2, progress=False,
                         model=ModelConfig(model=str(tiny_model_path)), env=EnvConfig(env_id, env_kwargs),
                         rollout=RolloutConfig(prompts_per_step=2, group_size=4, max_new_tokens=24),
                         optim=OptimConfig(lr=1e-4, mini_batches=2))
    trainer = Trainer(config)
    before = [p.detach().clone() for p in trainer.policy.model.parameters()]
    batch, _ = trainer.rollout(1)
    batch = batch.replace(rewards=torch.tensor([1.0, 0.0, 0.0, 0.0] * 2))  # force a learning signal
    trainer.update(batch, 1)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.model.parameters()))
    result = trainer.train()
    for record in result.history:
        assert math.isfinite(record["reward_mean"]) and math.isfinite(record["entropy_mean"])
        assert math.isfinite(record["pg_loss"]) and math.isfinite(record["grad_norm"])
