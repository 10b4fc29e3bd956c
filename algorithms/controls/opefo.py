"""On-Policy Entropy Flow Optimization (OPEFO, arXiv 2605.11491): balance the entropy flowing in and out per update."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.distributed import all_reduce_sum
from covgym.algorithms.first_order import unit_step_entropy_change
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register
from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from covgym.core.batch import RolloutBatch


def entropy_flows(change: Tensor, response_mask: Tensor) -> tuple[float, float]:
    """``(F_in, F_out)``: the summed predicted entropy increase and decrease (both >= 0) over the global batch."""
    valid = response_mask > 0
    inflow = torch.where(valid & (change > 0), change, torch.zeros_like(change)).sum()
    outflow = torch.where(valid & (change < 0), -change, torch.zeros_like(change)).sum()
    sums = all_reduce_sum(torch.stack([inflow, outflow]).double())
    return float(sums[0]), float(sums[1])


@register
@dataclass
class OPEFO(Control):
    """Scale down the dominant branch of the entropy flow so the two branches of one update balance.

    Each response token's update changes entropy, to first order and per unit step, by
    ``s_t = −A_t·π_t·(log π_t + H_t)`` (``covgym.algorithms.first_order``: the sampled-token term, from the rollout's
    log-probs and entropies). Over the rollout the inflow is ``F_in = Σ_{s_t>0} s_t`` and the outflow
    ``F_out = Σ_{s_t<0} |s_t|``. The branch with the larger flow has its tokens' advantages multiplied by
    ``c = max(opefo_min_scale, (F_minor/F_major)^opefo_strength)``; the other branch is untouched. With strength 1
    and no floor the update's predicted entropy change is 0 (flows balanced); strength 0 is the plain estimator.
    The paper's finding is that the outflow dominates under GRPO, so in practice the entropy-decreasing updates
    are scaled down. Strictly on-policy: the weights are fixed once per rollout from the rollout policy and act
    through the advantages, so they need no stale reference and also act on the first, on-policy mini-batch
    (unlike clipping heuristics and KL-Cov). Weights are in (0, 1]: no token's gradient is flipped or amplified.
    The paper's exact rescaling rule was not available here (only its abstract and summaries: "rescales
    entropy-increasing and entropy-decreasing updates according to their contributions to entropy change, while
    remaining strict on-policy"); this flow-ratio rule, its exponent and its floor are covgym's formulation.
    ``entropy_effect`` is not declared: the control steers toward a zero first-order change, not toward an entropy
    level, so it raises entropy when the outflow dominates and lowers it when the inflow does.
    Logged: ``opefo_inflow``, ``opefo_outflow``, ``opefo_scale``, ``opefo_branch`` (−1: decreasing scaled).
    """

    name = "opefo"
    description = "Balance entropy-increasing and -decreasing token updates by their share of the entropy flow"
    source = "after OPEFO (arXiv 2605.11491); covgym's formulation (the paper's exact rule not available)"

    opefo_strength: float = hyperparameter(1.0, "exponent on F_minor/F_major: 1 balances the flows, 0 is off")
    opefo_min_scale: float = hyperparameter(0.1, "floor of the dominant branch's scale (keeps a one-sided batch "
                                                 "learning)")

    def validate(self) -> None:
        if not 0.0 <= self.opefo_strength <= 1.0:
            raise ValueError(f"opefo_strength must be in [0, 1], got {self.opefo_strength}")
        if not 0.0 <= self.opefo_min_scale <= 1.0:
            raise ValueError(f"opefo_min_scale must be in [0, 1], got {self.opefo_min_scale}")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.last: dict[str, float] = {}

    def scales(self, change: Tensor, response_mask: Tensor) -> Tensor:
        """``[B, T]`` factors on the advantages: ``c`` on the dominant branch, 1 elsewhere."""
        inflow, outflow = entropy_flows(change, response_mask)
        major, minor = max(inflow, outflow), min(inflow, outflow)
        scale = 1.0 if major == 0.0 else max(self.opefo_min_scale, (minor / major) ** self.opefo_strength)
        dominant = change < 0 if outflow > inflow else change > 0
        self.last = {"opefo_inflow": inflow, "opefo_outflow": outflow, "opefo_scale": scale,
                     "opefo_branch": -1.0 if outflow > inflow else 1.0 if inflow > outflow else 0.0}
        factor = torch.where(dominant & (response_mask > 0), torch.full_like(change, scale), torch.ones_like(change))
        return factor

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        change = unit_step_entropy_change(batch, advantages)  # [B, T]
        return advantages * self.scales(change, batch.response_mask).to(advantages.dtype)

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        return dict(self.last)
