"""Skywork-OR1's adaptive entropy control: a bonus that is on only while entropy is below a target."""

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
    """Adds ``−α_k·agg(H)`` while the last measured entropy is below the target, nothing otherwise.

    After step k, with ``H_k`` the step's mean token entropy (metric ``entropy_mean``) and ``H*`` the target:
    ``α_{k+1} = clip(α_k + Δ, α_min, α_max)`` if ``H_k < H*`` else ``clip(α_k − Δ, α_min, α_max)``, and the bonus of
    step k+1 is applied only if ``H_k < H*`` (the gate; before the first measurement it is on). Without the gate a
    coefficient raised during a stretch below the target would keep pushing entropy up above it for α/Δ steps.
    This is Skywork-OR1's ``EntController`` (verl/trainer/ppo/core_algos.py: ``update`` raises or lowers ``value`` by
    ``delta_ent_coef``, clips it, and sets ``entropy_loss_enabled = current_ent < target_ent``) with the defaults
    of its released recipe (or1_scripts/train/7b_8k.sh: target 0.2, Δ = 1e-4, clamp [0, 0.005], α_0 = 0). TRL's
    ``use_adaptive_entropy`` applies the same gate (its defaults: Δ = 0.005, clamp [0, 1]). Logged:
    ``adaptive_entropy_coeff`` (the coefficient the step applied, 0 while gated off).
    """

    name = "adaptive_entropy"
    description = "Entropy bonus with a coefficient steered toward a target entropy"
    source = ("He et al. 2025 (Skywork Open Reasoner 1 §3.2.5); Skywork-OR1 EntController and or1_scripts/train/"
              "7b_8k.sh; TRL use_adaptive_entropy")
    needs = frozenset({"token_entropy"})
    entropy_effect = "target"

    adaptive_entropy_target: float = hyperparameter(0.2, "H*, the target mean token entropy (nats)")
    adaptive_entropy_coeff_init: float = hyperparameter(0.0, "α_0, the coefficient of the first step")
    adaptive_entropy_coeff_step: float = hyperparameter(1e-4, "Δ, the change of the coefficient per step")
    adaptive_entropy_coeff_min: float = hyperparameter(0.0, "lower clamp of the coefficient")
    adaptive_entropy_coeff_max: float = hyperparameter(0.005, "upper clamp of the coefficient")

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
        self.enabled = True  # the gate: the last measured entropy was below the target (on before any measurement)

    def entropy_band(self) -> tuple[float, float]:
        return self.adaptive_entropy_target, self.adaptive_entropy_target

    def applied_coefficient(self) -> float:
        """The coefficient this step applies: α_k while the gate is on, else 0."""
        return self.coefficient if self.enabled else 0.0

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        entropy = self.require_entropy(entropy)
        coefficient = self.applied_coefficient()
        terms = [-(coefficient * aggregate(entropy))] if coefficient > 0 else []
        return terms, {"adaptive_entropy_coeff": coefficient}

    def update(self, entropy: float) -> float:
        """One adaptation step from the measured mean token entropy; returns the coefficient the next step applies."""
        if math.isfinite(entropy):
            below = entropy < self.adaptive_entropy_target
            direction = 1.0 if below else -1.0
            self.coefficient = min(self.adaptive_entropy_coeff_max, max(
                self.adaptive_entropy_coeff_min, self.coefficient + direction * self.adaptive_entropy_coeff_step))
            self.enabled = below
        return self.applied_coefficient()

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        entropy = metrics.get("entropy_mean")
        if entropy is None:
            raise ValueError("adaptive_entropy needs the step metric 'entropy_mean' (the rollout's token entropy)")
        return {"adaptive_entropy_coeff_next": self.update(float(entropy))}

    def state_dict(self) -> dict[str, Any]:
        return {"coefficient": self.coefficient, "enabled": self.enabled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coefficient = float(state["coefficient"])
        self.enabled = bool(state.get("enabled", True))
