"""Entrocraft (lblaoke/entrocraft): keep the rollout entropy inside an annealed band by choosing which samples learn."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.first_order import rollout_entropy
from covgym.algorithms.functional import broadcast_over_response
from covgym.algorithms.parts import ScheduledControl
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch

SCHEDULES = ("constant", "linear", "cos")


@register
@dataclass
class Entrocraft(ScheduledControl):
    """Above the band only positive samples learn, below it only negative ones, inside it the estimator's advantages.

    With ``H`` the rollout's mean token entropy, ``s_i`` a response's score and ``[L_k, U_k]`` the band at step k:
    ``H > U_k``: ``A_i = max(s_i, 0)`` (RAFT++: reinforce what was rewarded, which sharpens the policy);
    ``H < L_k``: ``A_i = min(s_i, 0)`` (NSR: only push down what was penalised, which spreads it);
    otherwise the advantages of the estimator (GRPO in the source). Scores are raw, not group-normalised, as in the
    source; NSR needs negative scores (a 0/1 reward gives it nothing to learn from: use ±1 rewards).
    The band is annealed from ``(entrocraft_lower_start, entrocraft_upper_start)`` to ``(…_end, …_end)`` with
    progress ``k/entrocraft_steps`` (``linear``) or ``(1 − cos(π·k/entrocraft_steps))/2`` (``cos``), k counting
    training steps from 1 as verl's ``global_steps``; ``constant`` keeps the start band. Checked against
    verl/trainer/ppo/core_algos.py of lblaoke/entrocraft (``compute_grpo_range_outcome_advantage``, ``..._linear``,
    ``..._cos``, ``compute_raftpp_outcome_advantage``, ``compute_nsr_outcome_advantage``) and its ray_trainer.py
    (``current_entropy`` is the rollout's aggregated token entropy). Logged: ``entrocraft_lower``,
    ``entrocraft_upper``, ``entrocraft_regime`` (+1 above, −1 below, 0 inside).
    """

    first_step: ClassVar[int] = 1  # verl's global_steps: 1 at the first update

    name = "entrocraft"
    description = "Annealed entropy band: positive samples only above it, negative only below, GRPO inside"
    source = "Entrocraft, github.com/lblaoke/entrocraft verl/trainer/ppo/core_algos.py (grpo_range*)"

    entrocraft_lower_start: float = hyperparameter(0.4, "lower edge of the entropy band at step 0 (nats)")
    entrocraft_upper_start: float = hyperparameter(0.5, "upper edge of the entropy band at step 0 (nats)")
    entrocraft_lower_end: float | None = hyperparameter(0.1, "lower edge after the anneal (None: the start)")
    entrocraft_upper_end: float | None = hyperparameter(0.2, "upper edge after the anneal (None: the start)")
    entrocraft_steps: int = hyperparameter(100, "training steps of the anneal")
    entrocraft_schedule: str = hyperparameter("cos", f"band anneal: {', '.join(SCHEDULES)}")

    def validate(self) -> None:
        if self.entrocraft_schedule not in SCHEDULES:
            raise ValueError(f"entrocraft_schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{self.entrocraft_schedule!r}")
        if self.entrocraft_steps <= 0:
            raise ValueError(f"entrocraft_steps must be > 0, got {self.entrocraft_steps}")
        for low, high in ((self.entrocraft_lower_start, self.entrocraft_upper_start),
                          (self.entrocraft_lower_end, self.entrocraft_upper_end)):
            if low is not None and high is not None and not 0 <= low <= high:
                raise ValueError(f"need 0 <= entrocraft lower <= upper, got {low} and {high}")

    def band(self) -> tuple[float, float]:
        """``(L_k, U_k)`` at the current step."""
        fraction = min(1.0, self.step / self.entrocraft_steps)
        progress = {"constant": 0.0, "linear": fraction, "cos": 0.5 * (1.0 - math.cos(math.pi * fraction))}[
            self.entrocraft_schedule]
        low_end = self.entrocraft_lower_start if self.entrocraft_lower_end is None else self.entrocraft_lower_end
        high_end = self.entrocraft_upper_start if self.entrocraft_upper_end is None else self.entrocraft_upper_end
        return (self.entrocraft_lower_start + (low_end - self.entrocraft_lower_start) * progress,
                self.entrocraft_upper_start + (high_end - self.entrocraft_upper_start) * progress)

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        low, high = self.band()
        entropy = rollout_entropy(batch)
        scores = batch.outcome_token_rewards().sum(-1).to(advantages.dtype)  # [B]
        regime = 1.0 if entropy > high else -1.0 if entropy < low else 0.0
        self.last = {"entrocraft_lower": low, "entrocraft_upper": high, "entrocraft_regime": regime}
        if regime > 0:
            return broadcast_over_response(scores.clamp_min(0.0), batch.response_mask).to(advantages.dtype)
        if regime < 0:
            return broadcast_over_response(scores.clamp_max(0.0), batch.response_mask).to(advantages.dtype)
        return advantages
