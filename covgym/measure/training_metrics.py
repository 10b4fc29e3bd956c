"""Per-step measurements the trainer logs: rollout statistics and the entropy dynamics of an update.

The formulas live in ``covgym.core.metrics`` and ``covgym.measure.entropy_dynamics``; this module only picks the
tensors out of a batch and a policy, so the trainer's loop stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from covgym.core.batch import RolloutBatch
from covgym.core.metrics import masked_mean
from covgym.measure.entropy_dynamics import (covariance_stats, entropy_change_stats, entropy_stats, polarity_stats,
                                             response_level_covariance, sequence_mean)

MAX_MEASURED_POSITIONS = 512


def merge_disjoint(*groups: dict[str, Any]) -> dict[str, Any]:
    """Merge metric groups into one record; a key two groups share is an error, never a silent overwrite.

    Batch statistics (``cov_mean``: the whole rollout, old log-probs) and per-mini-batch loss statistics
    (``minibatch_cov_mean``: current log-probs) are different quantities and must keep different names.
    """
    merged: dict[str, Any] = {}
    for group in groups:
        clash = merged.keys() & group.keys()
        if clash:
            raise KeyError(f"metric name(s) {', '.join(sorted(clash))} produced twice in one step; every "
                           "metric group needs its own names")
        merged.update(group)
    return merged


def rollout_statistics(batch: RolloutBatch) -> dict[str, float]:
    """Reward, accuracy, entropy (mean and percentiles), length, and responses not graded in time."""
    mask = batch.response_mask
    correct = [bool(info.get("correct", False)) for info in batch.info]
    lengths = mask.sum(-1)
    return {
        "reward_mean": float(batch.rewards.mean()),
        "reward_std": float(batch.rewards.std()) if batch.batch_size > 1 else 0.0,
        "accuracy": sum(correct) / max(len(correct), 1),
        **entropy_stats(batch.entropies, mask),
        "response_length_mean": float(lengths.mean()),
        "response_length_max": float(lengths.max()),
        "num_sequences": float(batch.batch_size),
        "grading_timeouts": float(sum(bool(info.get("grading_timeout", False)) for info in batch.info)),
    }


def batch_statistics(batch: RolloutBatch, advantages: Tensor) -> dict[str, float]:
    """Advantage and covariance statistics (token level and the response-level bandit view) of a batch."""
    mask = batch.response_mask
    per_sequence_advantage = masked_mean(advantages, mask, dim=-1)  # [B]
    return {
        "advantage_mean": float(masked_mean(advantages, mask)),
        "advantage_abs_mean": float(masked_mean(advantages.abs(), mask)),
        **covariance_stats(batch.old_log_probs, advantages, mask),
        **response_level_covariance(sequence_mean(batch.old_log_probs, mask), per_sequence_advantage,
                                    batch.group_ids),
    }


@dataclass
class LogitSample:
    """Temperature-scaled logits ``[N, V]`` at sampled response positions ``[N, 2]`` (row, column)."""

    positions: Tensor
    logits: Tensor


@torch.no_grad()
def response_logits_sample(policy, mini: RolloutBatch, positions: Tensor | None = None) -> LogitSample:
    """Logits at up to ``MAX_MEASURED_POSITIONS`` response positions (the same ones before and after a step)."""
    if positions is None:
        positions = (mini.response_mask > 0).nonzero()  # [N, 2]
        if positions.shape[0] > MAX_MEASURED_POSITIONS:
            keep = torch.linspace(0, positions.shape[0] - 1, MAX_MEASURED_POSITIONS).long()
            positions = positions[keep]
    mask = torch.zeros_like(mini.response_mask)
    mask[positions[:, 0], positions[:, 1]] = 1.0
    was_training = policy.model.training
    policy.model.eval()
    logits = policy.response_logits(mini.input_ids, mini.attention_mask, mask).float().cpu()
    policy.model.train(was_training)
    return LogitSample(positions, logits)


def entropy_change(before: LogitSample, after: LogitSample, advantages: Tensor, mini: RolloutBatch
                   ) -> dict[str, float]:
    """Actual vs first-order predicted entropy change of one optimizer step, and the tokens' polarity."""
    rows, columns = before.positions[:, 0], before.positions[:, 1]
    sampled = mini.input_ids[rows, columns, None]
    log_prob_sampled = torch.log_softmax(before.logits.double(), -1).gather(-1, sampled)[:, 0]  # [N]
    return {**entropy_change_stats(before.logits, after.logits),
            **polarity_stats(log_prob_sampled, before.logits, advantages[rows, columns])}
