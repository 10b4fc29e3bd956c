"""Dr. GRPO's estimator: GRPO without the division by the group's std (Liu et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.estimators.grpo import GRPOEstimator
from covgym.algorithms.registry import register


@register
@dataclass
class DrGRPOEstimator(GRPOEstimator):
    """``A_i = score_i − mean_g``. The Dr. GRPO preset also sums the loss over tokens and divides by a constant."""

    name = "dr_grpo"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")  # checked by covgym.testing.check_algorithm
    description = "Group-mean baseline without std normalisation"
    source = "Liu et al. 2025 (Understanding R1-Zero-Like Training); verl norm_adv_by_std_in_grpo=False"

    norm_adv_by_std_in_grpo: bool = hyperparameter(False, "divide by the group's std (False: Dr. GRPO)")
