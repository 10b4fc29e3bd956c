"""Clip-higher (DAPO): GRPO with an asymmetric PPO clip range, ε_high > ε_low (Yu et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass

from covgym.algorithms.base import hyperparameter, register
from covgym.algorithms.grpo import GRPO


@register
@dataclass
class ClipHigher(GRPO):
    """GRPO advantages; PPO-clip with ``clip_ratio_low = 0.2`` and ``clip_ratio_high = 0.28`` (DAPO's values).

    A larger upper bound lets low-probability tokens with positive advantage grow further, which slows the
    entropy collapse.
    """

    name = "clip_higher"
    description = "GRPO with asymmetric clipping ε_low=0.2, ε_high=0.28 (DAPO clip-higher)"
    source = "Yu et al. 2025 (DAPO); verl clip_ratio_low/clip_ratio_high"

    clip_ratio_low: float | None = hyperparameter(0.2, "lower clip range ε_low")
    clip_ratio_high: float | None = hyperparameter(0.28, "upper clip range ε_high (DAPO: 0.28)")
