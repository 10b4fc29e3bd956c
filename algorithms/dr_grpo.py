"""Dr. GRPO: GRPO without the std division and without per-sequence length normalisation (Liu et al., 2025)."""

from __future__ import annotations

from dataclasses import dataclass

from covgym.algorithms.base import hyperparameter, register
from covgym.algorithms.grpo import GRPO


@register
@dataclass
class DrGRPO(GRPO):
    """Dr. GRPO: ``A_i = score_i − mean_g`` and the loss summed over tokens, divided by a constant.

    verl's recipe: ``norm_adv_by_std_in_grpo=False`` and ``loss_agg_mode="seq-mean-token-sum-norm"``. The
    constant is ``loss_scale_factor`` (default: the padded length; set it to the maximum response length to keep
    it fixed through training, as the paper's MAX_TOKENS).
    """

    name = "dr_grpo"
    description = "GRPO without std normalisation and with a constant length normaliser"
    source = "Liu et al. 2025 (Understanding R1-Zero-Like Training); verl docs Dr. GRPO recipe"

    norm_adv_by_std_in_grpo: bool = hyperparameter(False, "divide by the group's std (False: Dr. GRPO)")
    loss_agg_mode: str = hyperparameter("seq-mean-token-sum-norm", "loss aggregation (Dr. GRPO: "
                                        "seq-mean-token-sum-norm)")
