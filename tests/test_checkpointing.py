"""Activation checkpointing (``--gradient-checkpointing``, ``--checkpoint-every-n-layers``): which layers
recompute, and that recomputing changes no score, entropy or gradient."""

from __future__ import annotations

import pytest
import torch

from covgym.train.config import ConfigError, ModelConfig, TrainConfig, validate


def _load(directory, every: int | None):
    from covgym.models.policy import Policy

    return Policy.from_pretrained(str(directory), show_progress=False, gradient_checkpointing=every is not None,
                                  checkpoint_every_n_layers=every or 1)


def _checkpointed_layers(policy) -> list[bool]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [bool(m.gradient_checkpointing) for m in policy.model.modules() if isinstance(m, GradientCheckpointingLayer)]


def _scores_and_gradients(policy) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Log-probs, entropies and parameter gradients of one uneven batch (packed rows) under a fixed loss."""
    generator = torch.Generator().manual_seed(1)
    lengths = [12, 5, 9, 12]
    ids = torch.full((4, 12), policy.pad_token_id)
    mask = torch.zeros(4, 12, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, policy.model.config.vocab_size, (n,), generator=generator)
        mask[row, :n] = 1
    response = mask.clone()
    response[:, :3] = 0
    policy.model.train()
    log_probs, entropies = policy.score(ids, mask, positions=response)
    (log_probs * torch.linspace(-1, 1, 12) + 0.3 * entropies).sum().backward()
    return log_probs.detach(), entropies.detach(), [p.grad.clone() for p in policy.model.parameters()]


@pytest.mark.parametrize("every, expected", [(None, [False] * 4), (1, [True] * 4), (2, [True, False, True, False])])
def test_every_n_layers_checkpoints_those_layers(four_layer_dir, every, expected):
    assert _checkpointed_layers(_load(four_layer_dir, every)) == expected


@pytest.mark.parametrize("every", [1, 2, 3])
def test_recomputing_changes_no_score_entropy_or_gradient(four_layer_dir, every):
    reference = _scores_and_gradients(_load(four_layer_dir, None))
    checkpointed = _scores_and_gradients(_load(four_layer_dir, every))
    torch.testing.assert_close(checkpointed[0], reference[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(checkpointed[1], reference[1], rtol=0, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in reference[2])
    for ours, theirs in zip(checkpointed[2], reference[2]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_every_n_layers_is_refused_without_checkpointing_and_below_one():
    with pytest.raises(ConfigError, match="checkpoint_every_n_layers: is read only with gradient checkpointing"):
        validate(TrainConfig(model=ModelConfig(checkpoint_every_n_layers=2)))
    with pytest.raises(ConfigError, match="checkpoint_every_n_layers: must be >= 1"):
        validate(TrainConfig(model=ModelConfig(gradient_checkpointing=True, checkpoint_every_n_layers=0)))
    validate(TrainConfig(model=ModelConfig(gradient_checkpointing=True, checkpoint_every_n_layers=2)))
