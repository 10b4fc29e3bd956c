"""Per-step measurements the trainer logs: rollout statistics and the entropy dynamics of an update.

The formulas live in ``covgym.metrics`` and ``covgym.entropy_dynamics``; this module only picks the tensors out
of a batch and a policy, so the trainer's loop stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from covgym.batch import RolloutBatch
from covgym.metrics import masked_mean, predicted_entropy_change, entropy_from_logits, token_covariance

MAX_MEASURED_POSITIONS = 512


def rollout_statistics(batch: RolloutBatch) -> dict[str, float]:
    """Reward, accuracy, entropy and length of a rollout."""
    mask = batch.response_mask
    correct = [bool(info.get("correct", False)) for info in batch.info]
    lengths = mask.sum(-1)
    entropy = batch.entropies[mask > 0]
    stats = {
        "reward_mean": float(batch.rewards.mean()),
        "reward_std": float(batch.rewards.std()) if batch.batch_size > 1 else 0.0,
        "accuracy": sum(correct) / max(len(correct), 1),
        "entropy_mean": float(masked_mean(batch.entropies, mask)),
        "response_length_mean": float(lengths.mean()),
        "response_length_max": float(lengths.max()),
        "num_sequences": float(batch.batch_size),
    }
    if entropy.numel():
        quantiles = torch.quantile(entropy.float(), torch.tensor([0.1, 0.5, 0.9]))
        stats.update(entropy_p10=float(quantiles[0]), entropy_p50=float(quantiles[1]), entropy_p90=float(quantiles[2]))
    return stats


def batch_statistics(batch: RolloutBatch, advantages: Tensor) -> dict[str, float]:
    """Advantage and covariance statistics of the batch an update trains on."""
    mask = batch.response_mask
    covariance = token_covariance(batch.old_log_probs, advantages, mask)[mask > 0]
    stats = {"advantage_mean": float(masked_mean(advantages, mask)),
             "advantage_abs_mean": float(masked_mean(advantages.abs(), mask))}
    if covariance.numel():
        stats.update(cov_mean=float(covariance.mean()), cov_pos_frac=float((covariance > 0).float().mean()))
    return stats


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
    """Actual vs first-order predicted entropy change of one optimizer step, per measured position."""
    actual = entropy_from_logits(after.logits) - entropy_from_logits(before.logits)  # [N]
    predicted = predicted_entropy_change(before.logits, after.logits - before.logits)  # [N]
    stats = {"dH_actual_mean": float(actual.mean()), "dH_predicted_mean": float(predicted.mean())}
    if actual.numel() > 1 and actual.std() > 0 and predicted.std() > 0:
        stats["dH_corr"] = float(torch.corrcoef(torch.stack([actual, predicted]))[0, 1])
    if abs(stats["dH_predicted_mean"]) > 0:
        stats["dH_ratio"] = stats["dH_actual_mean"] / stats["dH_predicted_mean"]
    return stats
