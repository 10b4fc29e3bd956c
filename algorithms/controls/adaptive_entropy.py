"""An entropy bonus whose coefficient adapts between steps to hold a target entropy (as Skywork-OR1 does)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class AdaptiveEntropy(Control):
    """Adds ``−α_k·agg(H)``; after step k, ``α_{k+1} = clip(α_k + Δ·sign(H* − H_k), α_min, α_max)``.

    ``H_k`` is the step's mean token entropy of the rollout (metric ``entropy_mean``), ``H*`` the target: the
    coefficient rises while entropy is below the target and falls while it is above, one step ``Δ`` per training
    step, and stays in ``[adaptive_entropy_coeff_min, adaptive_entropy_coeff_max]``. The coefficient is part of the
    checkpoint. Logged: ``adaptive_entropy_coeff`` (the coefficient the step used).
    """

    name = "adaptive_entropy"
    description = "Entropy bonus with a coefficient steered toward a target entropy"
    source = "He et al. 2025 (Skywork Open Reasoner 1, adaptive entropy control); covgym's parameterisation"
    needs = frozenset({"token_entropy"})

    adaptive_entropy_target: float = hyperparameter(0.2, "H*, the target mean token entropy (nats)")
    adaptive_entropy_coeff_init: float = hyperparameter(0.0, "α_0, the coefficient of the first step")
    adaptive_entropy_coeff_step: float = hyperparameter(0.001, "Δ, the change of the coefficient per step")
    adaptive_entropy_coeff_min: float = hyperparameter(0.0, "lower clamp of the coefficient")
    adaptive_entropy_coeff_max: float = hyperparameter(0.05, "upper clamp of the coefficient")

    def validate(self) -> None:
        if self.adaptive_entropy_target < 0:
            raise ValueError(f"adaptive_entropy_target must be >= 0, got {self.adaptive_entropy_target}")
        if self.adaptive_entropy_coeff_step < 0:
            raise ValueError(f"adaptive_entropy_coeff_step must be >= 0, got {self.adaptive_entropy_coeff_step}")
        if not 0 <= self.adaptive_entropy_coeff_min <= self.adaptive_entropy_coeff_max:
            raise ValueError(f"need 0 <= adaptive_entropy_coeff_min <= adaptive_entropy_coeff_max, got "
                             f"{self.adaptive_entropy_coeff_min} and {self.adaptive_entropy_coeff_max}")
        if not self.adaptive_entropy_coeff_min <= self.adaptive_entropy_coeff_init <= self.adaptive_entropy_coeff_max:
            raise ValueError(f"adaptive_entropy_coeff_init must lie within the clamp, got "
                             f"{self.adaptive_entropy_coeff_init}")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.coefficient = float(self.adaptive_entropy_coeff_init)

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        entropy = self.require_entropy(entropy)
        terms = [-(self.coefficient * aggregate(entropy))] if self.coefficient > 0 else []
        return terms, {"adaptive_entropy_coeff": self.coefficient}

    def update(self, entropy: float) -> float:
        """One adaptation step from the measured mean token entropy; returns the new coefficient."""
        if math.isfinite(entropy) and entropy != self.adaptive_entropy_target:
            direction = 1.0 if entropy < self.adaptive_entropy_target else -1.0
            self.coefficient = min(self.adaptive_entropy_coeff_max, max(
                self.adaptive_entropy_coeff_min, self.coefficient + direction * self.adaptive_entropy_coeff_step))
        return self.coefficient

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        entropy = metrics.get("entropy_mean")
        if entropy is None:
            raise ValueError("adaptive_entropy needs the step metric 'entropy_mean' (the rollout's token entropy)")
        return {"adaptive_entropy_coeff_next": self.update(float(entropy))}

    def state_dict(self) -> dict[str, Any]:
        return {"coefficient": self.coefficient}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coefficient = float(state["coefficient"])
