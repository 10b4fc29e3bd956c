"""Entropy bonus: GRPO with ``−entropy_coeff·agg(H)`` added to the loss."""

from __future__ import annotations

from dataclasses import dataclass

from covgym.algorithms.base import hyperparameter, register
from covgym.algorithms.grpo import GRPO


@register
@dataclass
class EntropyBonus(GRPO):
    """GRPO advantages and loss, minus ``entropy_coeff`` times the aggregated token entropy of the policy.

    Default ``entropy_coeff = 0.005``: the one value Cui et al. (2025, §4.1) found stable (1e-4 and 1e-3 change
    nothing, 0.01 makes entropy explode). The trainer must pass ``entropy`` (with gradient) to ``policy_loss``.
    Any other algorithm gets the same term by setting its ``entropy_coeff``.
    """

    name = "entropy_bonus"
    description = "GRPO + entropy bonus (entropy_coeff=0.005)"
    source = "Cui et al. 2025 §4.1; verl actor entropy_coeff"

    entropy_coeff: float = hyperparameter(0.005, "entropy bonus coefficient (loss −= coeff·agg(H))")
