"""Dropout is off in training: the first, on-policy mini-batch has log π == log π_old exactly (Llama and GPT-2)."""

from __future__ import annotations

import pytest
import torch

from covgym.models.dropout import disable_dropout
from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig
from covgym.train.trainer import Trainer


def dropout_model(kind: str, vocab_size: int, pad: int, eos: int) -> torch.nn.Module:
    """A tiny causal LM with heavy dropout everywhere its architecture has it."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                             attention_dropout=0.5, pad_token_id=pad, eos_token_id=eos, bos_token_id=eos)
        return LlamaForCausalLM(config)
    config = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=256, resid_pdrop=0.5,
                        embd_pdrop=0.5, attn_pdrop=0.5, pad_token_id=pad, eos_token_id=eos, bos_token_id=eos)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def dropout_model_dir(request, tmp_path_factory):
    from covgym.models.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    model = dropout_model(request.param, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    directory = tmp_path_factory.mktemp(f"dropout_{request.param}")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def first_minibatch_gap(model_dir, tmp_path, **model_options) -> tuple[float, dict]:
    """max |log π − log π_old| over the response tokens of the first mini-batch of a one-step run."""
    config = TrainConfig(steps=1, run_dir=str(tmp_path / "run"), eval_problems=0, progress=False, tensorboard=False,
                         entropy_dynamics=False, model=ModelConfig(model=str(model_dir), **model_options),
                         rollout=RolloutConfig(prompts_per_step=2, group_size=4, max_new_tokens=6),
                         optim=OptimConfig(lr=1e-3, mini_batches=1))
    trainer = Trainer(config)
    seen: dict = {}
    original = trainer.algorithm.policy_loss

    def recording(log_probs, old_log_probs, advantages, response_mask, **kwargs):
        if "gap" not in seen:
            mask = response_mask > 0
            seen["gap"] = float((log_probs.detach() - old_log_probs)[mask].abs().max())
            seen["tokens"] = int(mask.sum())
            seen["training"] = trainer.policy.model.training
            seen["checkpointing"] = trainer.policy._activation_checkpointing()
        return original(log_probs, old_log_probs, advantages, response_mask, **kwargs)

    trainer.algorithm.policy_loss = recording  # type: ignore[method-assign]
    batch, _ = trainer.rollout(1)
    trainer.update(batch, 1)
    return seen["gap"], seen


def test_the_first_minibatch_is_exactly_on_policy_with_dropout_in_the_model(dropout_model_dir, tmp_path):
    gap, seen = first_minibatch_gap(dropout_model_dir, tmp_path)
    assert seen["tokens"] > 0 and seen["training"]  # scored in train mode, as the update must
    assert gap == 0.0, f"log π differs from log π_old by up to {gap} on the on-policy mini-batch"


def test_gradient_checkpointing_still_runs_with_dropout_off(dropout_model_dir, tmp_path):
    """HF checkpointing recomputes layers only in train mode: dropout goes, train mode stays."""
    gap, seen = first_minibatch_gap(dropout_model_dir, tmp_path, gradient_checkpointing=True)
    assert seen["training"] and seen["checkpointing"]
    assert gap == 0.0


def test_disable_dropout_makes_train_mode_match_eval_mode():
    from covgym.models.tiny_model import build_tokenizer

    tokenizer = build_tokenizer()
    ids = torch.tensor([tokenizer.encode("1+2=3")])
    for kind in ("llama", "gpt2"):
        model = dropout_model(kind, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
        model.train()
        assert not torch.equal(model(ids).logits, model(ids).logits)  # the dropout is real before
        assert disable_dropout(model) > 0
        train_logits = model(ids).logits
        model.eval()
        assert torch.equal(train_logits, model(ids).logits)
        assert disable_dropout(model) == 0  # nothing left to turn off
