"""Plausible buggy parts, written as a user outside the repository would (the documented part API only), each
with a bug that check_algorithm must catch. Load with ``covgym check-algorithm NAME --plugin broken_parts.py``."""

from dataclasses import dataclass

import torch

import covgym.algorithms as algorithms
from covgym.algorithms.functional import broadcast_over_response, group_mean


def _ratio(log_probs, old_log_probs):
    return torch.exp(torch.clamp(log_probs - old_log_probs, -20.0, 20.0))


@algorithms.register
@dataclass
class SignFlipped(algorithms.PolicyLoss):
    """Minimises +A·ratio: the objective's sign is flipped."""

    name = "broken_sign_flip"

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        return advantages * _ratio(log_probs, old_log_probs), {}


@algorithms.register
@dataclass
class RatioAgainstItself(algorithms.PolicyLoss):
    """The ratio's denominator is the current log-prob, not detached: ratio ≡ 1 and no gradient."""

    name = "broken_ratio_self"

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        return -advantages * torch.exp(log_probs - log_probs), {}


@algorithms.register
@dataclass
class InvertedRatio(algorithms.ClipRange, algorithms.PolicyLoss):
    """PPO-clip on π_old/π instead of π/π_old."""

    name = "broken_inverted_ratio"

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        ratio = _ratio(old_log_probs, log_probs)
        clipped = torch.clamp(ratio, 1 - self.low, 1 + self.high)
        return torch.maximum(-advantages * ratio, -advantages * clipped), {}


@algorithms.register
@dataclass
class LogProbShaped(algorithms.ClipRange, algorithms.PolicyLoss):
    """Shapes the advantage with the current log-prob (an entropy-like bonus) and forgets ``.detach()``."""

    name = "broken_logp_shaped"

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        shaped = advantages - 0.1 * log_probs
        ratio = _ratio(log_probs, old_log_probs)
        clipped = torch.clamp(ratio, 1 - self.low, 1 + self.high)
        return torch.maximum(-shaped * ratio, -shaped * clipped), {}


@algorithms.register
@dataclass
class OptimisticClip(algorithms.ClipRange, algorithms.PolicyLoss):
    """min instead of max: the clip never stops a runaway ratio."""

    name = "broken_optimistic_clip"

    def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
        ratio = _ratio(log_probs, old_log_probs)
        clipped = torch.clamp(ratio, 1 - self.low, 1 + self.high)
        return torch.minimum(-advantages * ratio, -advantages * clipped), {}


@algorithms.register
@dataclass
class AbsoluteAdvantage(algorithms.Estimator):
    """|score − group mean|: the sign is dropped, every sampled response is reinforced."""

    name = "broken_abs_advantage"

    def compute(self, batch):
        scores = batch.outcome_token_rewards().sum(-1).double()  # [B]
        centred = (scores - group_mean(scores, batch.group_ids)).abs()
        return broadcast_over_response(centred.float(), batch.response_mask)


@algorithms.register
@dataclass
class PenaltySignedBonus(algorithms.Control):
    """Declares an entropy bonus but adds +coeff·H to the loss (a penalty)."""

    name = "broken_entropy_bonus"
    entropy_effect = "raise"
    needs = frozenset({"token_entropy"})

    broken_entropy_coeff: float = algorithms.hyperparameter(0.005, "coefficient")

    def loss_terms(self, aggregate, log_probs, advantages, response_mask, entropy):
        return [self.broken_entropy_coeff * aggregate(self.require_entropy(entropy))], {}


@algorithms.register
@dataclass
class NegativeWeights(algorithms.Control):
    """Weights tokens by (H − 1): low-entropy tokens get negative weight, which flips their gradient."""

    name = "broken_negative_weights"
    needs = frozenset({"token_entropy"})

    def token_weights(self, log_probs, advantages, response_mask, entropy):
        return (self.require_entropy(entropy) - 1.0).detach(), {}
