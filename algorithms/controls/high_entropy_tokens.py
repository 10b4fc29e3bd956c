"""Train on the high-entropy minority (Wang et al., 2025, "Beyond the 80/20 rule"; TRL's top_entropy_quantile)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register
from covgym.algorithms.token_selection import choose_top, global_token_count
from covgym.metrics import masked_mean

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class HighEntropyTokens(Control):
    """Only the top ``⌈ρ·N⌉`` response tokens by the current policy's entropy keep their policy-gradient loss.

    ``N`` counts the response tokens of the global optimizer mini-batch (all data-parallel ranks); ties are broken
    by position, so exactly ``⌈ρ·N⌉`` tokens are trained. The others' per-token loss is multiplied by 0; the
    normaliser of the aggregation is unchanged (as TRL's ``top_entropy_quantile``). ρ = 0.2 is the paper's.
    """

    name = "high_entropy_tokens"
    description = "Policy gradient on the top-ρ fraction of tokens by entropy only"
    source = "Wang et al. 2025 (Beyond the 80/20 Rule, arXiv 2506.01939); TRL top_entropy_quantile"
    needs = frozenset({"token_entropy"})

    top_entropy_quantile: float = hyperparameter(0.2, "ρ, the fraction of response tokens (highest entropy) trained")

    def validate(self) -> None:
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise ValueError(f"top_entropy_quantile must be in (0, 1], got {self.top_entropy_quantile}")

    def token_weights(self, log_probs: Tensor, advantages: Tensor, response_mask: Tensor, entropy: Tensor | None
                      ) -> tuple[Tensor | None, dict[str, float]]:
        entropy = self.require_entropy(entropy)
        count = math.ceil(self.top_entropy_quantile * global_token_count(response_mask) - 1e-9)
        selected = choose_top(entropy, response_mask, count).to(log_probs.dtype)  # [B, T]
        return selected, {"high_entropy_tokens_frac": float(masked_mean(selected, response_mask))}
