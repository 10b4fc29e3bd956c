"""HTPO (Yao et al., 2026, arXiv 2605.08283): token groups by prompt difficulty × correctness × entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


def entropy_split(entropy: Tensor, valid: Tensor, high_ratio: float) -> Tensor:
    """``[T]`` bool: one response's high-entropy tokens, those >= its ``max(int(ρ·n), 1)``-th largest entropy."""
    values = entropy[valid]
    if values.numel() == 0:
        return torch.zeros_like(valid)
    threshold = torch.topk(values, max(int(high_ratio * values.numel()), 1)).values[-1]
    return valid & (entropy >= threshold)


@register
@dataclass
class HTPO(Control):
    """The token groups of HTPO whose objective differs on the on-policy mini-batch: two masks on the advantages.

    A prompt is hard when its group's accuracy is below ``htpo_difficulty_threshold`` (0.6; the code's name, the
    paper's ``1 − τ_diff``); a response is correct when its score is ``>= htpo_success_threshold``. Per response,
    the top ``max(int(0.2·n), 1)`` tokens by rollout entropy are high-entropy, the rest low. Of the eight groups
    (xcyao00/HTPO ``core_algos.py`` ``compute_policy_loss_htpo``, ``_compute_entropy_split_masks``):
    hard × correct × low entropy: PPO-clip with the lowest-entropy ``clip_entropy_ratio1`` = 0.6 % of the low tokens
    dropped (the source selects entropies strictly below the ``max(int(0.006·n_low), 1)``-th smallest, so it drops
    k − 1 tokens; replicated); easy × correct × high entropy: PPO-clip with the highest-entropy ``clip_entropy_ratio2``
    = 2 % of the high tokens dropped (``>=`` the k-th largest: k tokens); every other group is PPO-clip on the first
    mini-batch. Dropping a token is a zero advantage, applied once per rollout from the rollout's entropies (equal
    to the current ones on the on-policy mini-batch, where the source takes them).
    Not implemented: the source's gradients beyond the clip for high-entropy tokens (hard × correct: a restoring
    term past ``1 + ε_high`` and ``(π_old/π)·A`` below ``1 − ε_low``; incorrect × high entropy: ``(1 − ε_low)·A``
    below ``1 − ε_low``). They act only once the ratio has left the clip range (later mini-batches) and need the
    response's group inside the loss, which a covgym loss does not see; combine with ``ppo_clip`` (the source's
    ε_low 0.2, ε_high 0.28). ``entropy_effect`` is not declared: dropping low-entropy tokens of rewarded responses
    and high-entropy ones of easy rewarded responses pull entropy in opposite directions.
    Logged: ``htpo_dropped_frac``, ``htpo_hard_frac``.
    """

    name = "htpo"
    description = "HTPO's on-policy token-group masks (difficulty × correctness × entropy)"
    source = "Yao et al. 2026 (HTPO, arXiv 2605.08283); xcyao00/HTPO core_algos.py compute_policy_loss_htpo"

    htpo_difficulty_threshold: float = hyperparameter(0.6, "a prompt is hard when its group accuracy is below this")
    htpo_success_threshold: float = hyperparameter(1.0, "a response is correct when its score is >= this")
    htpo_high_entropy_ratio: float = hyperparameter(0.2, "fraction of each response's tokens that are high-entropy")
    clip_entropy_ratio1: float = hyperparameter(0.006, "hard×correct: fraction of low-entropy tokens dropped")
    clip_entropy_ratio2: float = hyperparameter(0.02, "easy×correct: fraction of high-entropy tokens dropped")

    def validate(self) -> None:
        for name in ("htpo_difficulty_threshold", "htpo_high_entropy_ratio", "clip_entropy_ratio1",
                     "clip_entropy_ratio2"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.last: dict[str, float] = {}

    def kept(self, batch: RolloutBatch) -> Tensor:
        """``[B, T]`` bool: False on the tokens HTPO drops."""
        scores = batch.outcome_token_rewards().sum(-1)  # [B]
        correct = scores >= self.htpo_success_threshold  # [B]
        hard = torch.zeros_like(correct)
        for group in torch.unique(batch.group_ids):
            members = batch.group_ids == group
            hard[members] = float(correct[members].double().mean()) < self.htpo_difficulty_threshold
        valid = batch.response_mask > 0  # [B, T]
        entropy = batch.entropies.double()
        keep = torch.ones_like(valid)
        for i in range(valid.shape[0]):
            if not bool(correct[i]) or not bool(valid[i].any()):
                continue
            high = entropy_split(entropy[i], valid[i], self.htpo_high_entropy_ratio)
            if bool(hard[i]):  # drop the lowest low-entropy tokens (strictly below the k-th smallest)
                low = valid[i] & ~high
                if bool(low.any()):
                    k = max(int(self.clip_entropy_ratio1 * int(low.sum())), 1)
                    kth = torch.topk(entropy[i][low], k, largest=False).values[-1]
                    keep[i] &= ~(low & (entropy[i] < kth))
            else:  # drop the highest high-entropy tokens (at or above the k-th largest)
                k = max(int(self.clip_entropy_ratio2 * int(high.sum())), 1)
                kth = torch.topk(entropy[i][high], k).values[-1]
                keep[i] &= ~(high & (entropy[i] >= kth))
        count = valid.sum().clamp_min(1)
        self.last = {"htpo_dropped_frac": float((valid & ~keep).sum() / count),
                     "htpo_hard_frac": float(hard.double().mean()) if hard.numel() else 0.0}
        return keep

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        return advantages * self.kept(batch).to(advantages.dtype)

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        return dict(self.last)
