"""Hand-written correct parts that check_algorithm must pass (no false alarms)."""

from dataclasses import dataclass

import torch

import covgym.algorithms as algorithms
from covgym.algorithms.functional import broadcast_over_response


@algorithms.register
@dataclass
class HandPPOClipHigher(algorithms.ClipRange, algorithms.PolicyLoss):
    """PPO-clip written out by hand, with DAPO's clip-higher bounds."""

    name = "variant_ppo_clip_higher"

    clip_ratio_high: float = algorithms.hyperparameter(0.28, "upper clip range")

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        ratio = torch.exp(torch.clamp(log_probs - old_log_probs, -20.0, 20.0))
        clipped = torch.clamp(ratio, 1 - self.low, 1 + self.high)
        return torch.maximum(-advantages * ratio, -advantages * clipped), {}


@algorithms.register
@dataclass
class Reinforce(algorithms.PolicyLoss):
    """REINFORCE: −A·log π."""

    name = "variant_reinforce"

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        return -advantages * log_probs, {}


@algorithms.register
@dataclass
class RawScore(algorithms.Estimator):
    """REINFORCE's advantage: the raw score, no baseline."""

    name = "variant_raw_score"

    def compute(self, batch):
        return broadcast_over_response(batch.outcome_token_rewards().sum(-1), batch.response_mask)


@algorithms.register
@dataclass
class MedianBaseline(algorithms.Estimator):
    """Score minus the group's median (docs/extending.md's example)."""

    name = "variant_median_baseline"
    advantage_invariants = ("shift_invariant",)

    def compute(self, batch):
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        medians = torch.stack([scores[batch.group_ids == g].median() for g in batch.group_ids])  # [B]
        return broadcast_over_response(scores - medians, batch.response_mask)


@algorithms.register
@dataclass
class Bonus(algorithms.Control):
    """A correct entropy bonus: −coeff·agg(H)."""

    name = "variant_entropy_bonus"
    entropy_effect = "raise"
    needs = frozenset({"token_entropy"})

    variant_entropy_coeff: float = algorithms.hyperparameter(0.005, "coefficient")

    def loss_terms(self, aggregate, log_probs, advantages, response_mask, entropy):
        return [-self.variant_entropy_coeff * aggregate(self.require_entropy(entropy))], {}


@algorithms.register
@dataclass
class PositiveWeights(algorithms.Control):
    """Weights tokens by 1 + H (favours uncertain tokens, never flips a gradient)."""

    name = "variant_positive_weights"
    needs = frozenset({"token_entropy"})

    def token_weights(self, log_probs, advantages, response_mask, entropy):
        return (1.0 + self.require_entropy(entropy)).detach(), {}
