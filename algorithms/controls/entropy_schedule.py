"""Entropy scheduling by rejecting responses: covgym's own formulation after Entrocraft (Li et al., 2026)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.first_order import linear_schedule, rollout_entropy, unit_step_entropy_change
from covgym.algorithms.parts import ScheduledControl
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class EntropySchedule(ScheduledControl):
    """Follow an entropy schedule by dropping responses whose update goes the wrong way; the loss is unchanged.

    Schedule: ``H*(k)`` = ``entropy_schedule_start`` annealed linearly to ``entropy_schedule_end`` over
    ``entropy_schedule_steps`` steps (constant when the end is unset). At step k, with ``H_k`` the rollout's mean
    token entropy and gap ``g = H*(k) − H_k``, each response's predicted entropy change is the sum of its tokens'
    first-order changes (``covgym.algorithms.first_order``). When ``g > 0`` (entropy should rise) the
    entropy-lowering responses are the wrong side, when ``g < 0`` the entropy-raising ones. A fraction
    ``p = min(1, |g| / entropy_schedule_tolerance)`` of the wrong-side responses, those with the largest predicted
    change, is rejected: their advantages are set to 0, which removes them from the update without touching the
    loss. Within the tolerance band nothing is rejected. Entrocraft's exact rule is not public here; this is
    covgym's formulation. Logged: ``entropy_schedule_target``, ``entropy_schedule_gap``,
    ``entropy_schedule_rejected_frac``.
    """

    name = "entropy_schedule"
    description = "Reject responses whose predicted entropy change opposes an entropy schedule"
    entropy_effect = "target"
    source = "after Entrocraft (Li et al. 2026); covgym's own formulation"

    entropy_schedule_start: float = hyperparameter(0.5, "H* at step 0 (nats of mean token entropy)")
    entropy_schedule_end: float | None = hyperparameter(None, "H* after the anneal (None: constant start)")
    entropy_schedule_steps: int = hyperparameter(100, "steps of the linear anneal from start to end")
    entropy_schedule_tolerance: float = hyperparameter(0.1, "gap (nats) at which every wrong-side response is dropped")

    def validate(self) -> None:
        if self.entropy_schedule_start < 0 or (self.entropy_schedule_end is not None and self.entropy_schedule_end < 0):
            raise ValueError("entropy_schedule_start and entropy_schedule_end must be >= 0")
        if self.entropy_schedule_steps < 0:
            raise ValueError(f"entropy_schedule_steps must be >= 0, got {self.entropy_schedule_steps}")
        if self.entropy_schedule_tolerance <= 0:
            raise ValueError(f"entropy_schedule_tolerance must be > 0, got {self.entropy_schedule_tolerance}")

    def entropy_band(self) -> tuple[float, float]:
        return self.target(), self.target()

    def target(self) -> float:
        return linear_schedule(self.step, self.entropy_schedule_start, self.entropy_schedule_end,
                               self.entropy_schedule_steps)

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        target, entropy = self.target(), rollout_entropy(batch)
        gap = target - entropy
        per_response = unit_step_entropy_change(batch, advantages).sum(-1)  # [B]
        wrong = per_response < 0 if gap > 0 else per_response > 0
        count = int(wrong.sum())
        rejected = torch.zeros_like(wrong)
        drop = round(min(1.0, abs(gap) / self.entropy_schedule_tolerance) * count)
        if drop > 0:
            order = torch.argsort(per_response.abs() * wrong, descending=True, stable=True)
            rejected[order[:drop]] = True
        self.last = {"entropy_schedule_target": target, "entropy_schedule_gap": gap,
                     "entropy_schedule_rejected_frac": float(rejected.double().mean()) if rejected.numel() else 0.0}
        return advantages * (~rejected).to(advantages.dtype)[:, None]
