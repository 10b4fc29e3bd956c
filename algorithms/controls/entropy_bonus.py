"""Entropy bonus: ``−entropy_coeff·agg(H)`` added to the loss (verl's actor ``entropy_coeff``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class EntropyBonus(Control):
    """Adds ``−entropy_coeff·agg(H)``, ``H`` the current policy's token entropy (with gradient).

    Default ``entropy_coeff = 0.005``: the one value Cui et al. (2025, §4.1) found stable (1e-4 and 1e-3 change
    nothing, 0.01 makes entropy explode).
    """

    name = "entropy_bonus"
    description = "Entropy bonus −coeff·agg(H)"
    source = "Cui et al. 2025 §4.1; verl actor entropy_coeff"
    needs = frozenset({"token_entropy"})
    entropy_effect = "raise"

    entropy_coeff: float = hyperparameter(0.005, "entropy bonus coefficient (loss −= coeff·agg(H))")

    def validate(self) -> None:
        if self.entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        if entropy is None or self.entropy_coeff == 0:
            return [], {}
        return [-(self.entropy_coeff * aggregate(entropy))], {}
