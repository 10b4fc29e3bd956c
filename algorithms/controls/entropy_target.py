"""Closed-loop entropy targeting with the first-order predictor: covgym's own control."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.first_order import global_mean, linear_schedule, rollout_entropy, unit_step_entropy_change
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class EntropyTarget(Control):
    """Scale the entropy-contracting branch of each update so that the predicted entropy follows a target.

    Before the update of step k: per token the first-order entropy change per unit step, ``s_t``
    (``covgym.algorithms.first_order``), splits into the expanding part ``E = mean_t max(s_t, 0)`` and the
    contracting part ``C = mean_t min(s_t, 0)``. Multiplying the contracting tokens' advantages by ``c`` predicts
    ``ΔH = κ·(E + c·C)``, with ``κ`` the run's measured nats per unit of predicted change. ``c`` is chosen so that
    ``H_k + ΔH`` equals the target ``H*(k)`` (``entropy_target_value`` annealed linearly to
    ``entropy_target_final`` over ``entropy_target_steps``), clamped to ``[0, entropy_target_max_scale]``.
    ``κ`` is learned online, as the slope through the origin of the achieved change ``H_{k+1} − H_k`` on the
    prediction at unit gain ``p_k``: ``κ = Σ w·a·p / Σ w·p²`` with exponentially decaying weights (rate
    ``entropy_target_gain_rate``; a step whose prediction is below a tenth of the typical one is skipped), which
    stays well conditioned while the entropy is held (predictions near 0) and averages out the sampling noise of
    ``H``; until the first positive estimate κ is ``entropy_target_gain_init``, or, unset, ``c = 1``.
    Logged per step: ``entropy_target_target``, ``entropy_target_predicted`` (``H_k + ΔH``),
    ``entropy_target_achieved`` (the previous step's achieved entropy change), ``entropy_target_scale`` (c),
    ``entropy_target_gain`` (κ). State (κ and the last prediction) is part of the checkpoint.
    """

    name = "entropy_target"
    description = "Scale the contracting branch so the first-order predicted entropy follows a target"
    entropy_effect = "target"
    source = "covgym's own (closed-loop use of the first-order law, Cui et al. 2025 §3)"

    entropy_target_value: float = hyperparameter(0.5, "H*, the target mean token entropy at step 0 (nats)")
    entropy_target_final: float | None = hyperparameter(None, "H* after the anneal (None: constant)")
    entropy_target_steps: int = hyperparameter(100, "steps of the linear anneal")
    entropy_target_max_scale: float = hyperparameter(1.0, "upper clamp of c (1: only ever brake the contraction)")
    entropy_target_gain_init: float | None = hyperparameter(
        None, "κ before the run has measured it (None: c = 1 until the first estimate)")
    entropy_target_gain_rate: float = hyperparameter(0.3, "forgetting rate of the regression that learns κ")

    def validate(self) -> None:
        if self.entropy_target_value < 0 or (self.entropy_target_final is not None and self.entropy_target_final < 0):
            raise ValueError("entropy_target_value and entropy_target_final must be >= 0")
        if self.entropy_target_steps < 0:
            raise ValueError(f"entropy_target_steps must be >= 0, got {self.entropy_target_steps}")
        if self.entropy_target_max_scale < 0:
            raise ValueError(f"entropy_target_max_scale must be >= 0, got {self.entropy_target_max_scale}")
        if self.entropy_target_gain_init is not None and self.entropy_target_gain_init <= 0:
            raise ValueError(f"entropy_target_gain_init must be > 0, got {self.entropy_target_gain_init}")
        if not 0 < self.entropy_target_gain_rate <= 1:
            raise ValueError(f"entropy_target_gain_rate must be in (0, 1], got {self.entropy_target_gain_rate}")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.step = 0
        self.gain: float | None = self.entropy_target_gain_init  # κ: nats of entropy change per unit of predicted change
        self.moments = [0.0, 0.0]  # decaying Σ a·p and Σ p² of the regression that gives κ
        self.previous: tuple[float, float] | None = None  # (H_k, predicted change at unit gain) of the last step
        self.last: dict[str, float] = {}

    def entropy_band(self) -> tuple[float, float]:
        return self.target(), self.target()

    def target(self) -> float:
        return linear_schedule(self.step, self.entropy_target_value, self.entropy_target_final,
                               self.entropy_target_steps)

    def _learn_gain(self, entropy: float) -> float:
        """Update κ from the previous step's prediction; returns the achieved change (nan before the first)."""
        if self.previous is None:
            return math.nan
        previous_entropy, unit_prediction = self.previous
        achieved = entropy - previous_entropy
        if unit_prediction * unit_prediction < 0.01 * self.moments[1]:
            return achieved  # a step that predicted (almost) nothing says little about κ: keep what is known
        keep = 1.0 - self.entropy_target_gain_rate
        self.moments = [keep * self.moments[0] + achieved * unit_prediction,
                        keep * self.moments[1] + unit_prediction * unit_prediction]
        if self.moments[0] > 0 and self.moments[1] > 0:
            self.gain = self.moments[0] / self.moments[1]
        return achieved

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        entropy, target = rollout_entropy(batch), self.target()
        achieved = self._learn_gain(entropy)
        change = unit_step_entropy_change(batch, advantages)  # [B, T]
        mask = batch.response_mask
        expanding = global_mean(change.clamp_min(0.0), mask)
        contracting = global_mean(change.clamp_max(0.0), mask)  # <= 0
        scale = 1.0
        if self.gain is not None and contracting < 0:
            wanted = (target - entropy) / self.gain  # the needed change at unit gain
            scale = min(self.entropy_target_max_scale, max(0.0, (wanted - expanding) / contracting))
        unit_prediction = expanding + scale * contracting
        self.previous = (entropy, unit_prediction)
        predicted = math.nan if self.gain is None else entropy + self.gain * unit_prediction
        self.last = {"entropy_target_target": target, "entropy_target_predicted": predicted,
                     "entropy_target_achieved": achieved, "entropy_target_scale": scale,
                     "entropy_target_gain": math.nan if self.gain is None else self.gain}
        factor = 1.0 + (scale - 1.0) * (change < 0).to(advantages.dtype)
        return advantages * factor

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        self.step += 1
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "gain": self.gain, "moments": list(self.moments),
                "previous": None if self.previous is None else list(self.previous)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.gain = state["gain"]
        self.moments = [float(v) for v in state["moments"]]
        self.previous = None if state["previous"] is None else tuple(state["previous"])
