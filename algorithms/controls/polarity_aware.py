"""Polarity-aware advantage reweighting: covgym's own formulation after "Entropy Polarity in RFT" (PAPO, 2026)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.first_order import rollout_entropy, unit_step_entropy_change
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


@register
@dataclass
class PolarityAware(Control):
    """Split the update by entropy polarity and tilt it toward the branch the run's phase asks for.

    Each token's polarity is the sign of its first-order entropy change (``covgym.algorithms.first_order``):
    expanding (+) or contracting (−). Both branches are kept; the advantages become
    ``A·(1 + λ·φ)`` on expanding tokens and ``A·(1 − λ·φ)`` on contracting ones, ``λ = polarity_strength``.
    The phase ``φ ∈ [−1, 1]`` asks for more entropy when positive. Online (``polarity_phase`` unset) it is read off
    the entropy trajectory: ``φ = clip((H_0 − H_k) / (polarity_tolerance·H_0), −1, 1)``, ``H_0`` the first
    rollout's mean token entropy (kept in the checkpoint) and ``H_k`` this rollout's, so the update leans on its
    expanding branch in proportion to how far entropy has fallen, and on its contracting branch when entropy has
    risen. This is the rule PAPO's abstract states (arXiv 2605.11775: both branches kept, advantage reweighting,
    the entropy trajectory as online phase); its weight function and phase signal were not available here, so the
    forms above are covgym's formulation.
    Logged: ``polarity_aware_phase``, ``polarity_aware_expand_frac``.
    """

    name = "polarity_aware"
    description = "Reweight entropy-expanding vs -contracting tokens by a phase read from the entropy trajectory"
    source = "after Entropy Polarity in Reinforcement Fine-Tuning (PAPO, 2026); covgym's own formulation"

    polarity_strength: float = hyperparameter(0.5, "λ ∈ [0, 1]: how far the phase tilts the two branches")
    polarity_tolerance: float = hyperparameter(0.2, "relative entropy drop from the start at which φ reaches 1")
    polarity_phase: float | None = hyperparameter(None, "a fixed phase φ ∈ [−1, 1] (None: online from entropy)")

    def validate(self) -> None:
        if not 0.0 <= self.polarity_strength <= 1.0:
            raise ValueError(f"polarity_strength must be in [0, 1], got {self.polarity_strength}")
        if self.polarity_tolerance <= 0:
            raise ValueError(f"polarity_tolerance must be > 0, got {self.polarity_tolerance}")
        if self.polarity_phase is not None and not -1.0 <= self.polarity_phase <= 1.0:
            raise ValueError(f"polarity_phase must be in [-1, 1] or None, got {self.polarity_phase}")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reference_entropy: float | None = None
        self.last: dict[str, float] = {}

    def phase(self, entropy: float) -> float:
        if self.polarity_phase is not None:
            return float(self.polarity_phase)
        if self.reference_entropy is None:
            self.reference_entropy = entropy
        drop = (self.reference_entropy - entropy) / max(self.polarity_tolerance * self.reference_entropy, 1e-8)
        return max(-1.0, min(1.0, drop))

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        phi = self.phase(rollout_entropy(batch))
        change = unit_step_entropy_change(batch, advantages)  # [B, T]
        expanding = change > 0
        factor = torch.where(expanding, 1.0 + self.polarity_strength * phi, 1.0 - self.polarity_strength * phi)
        mask = batch.response_mask > 0
        self.last = {"polarity_aware_phase": phi,
                     "polarity_aware_expand_frac": float((expanding & mask).sum() / mask.sum().clamp_min(1))}
        return advantages * factor.to(advantages.dtype)

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.reference_entropy is None else {"reference_entropy": self.reference_entropy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reference_entropy = state.get("reference_entropy")
