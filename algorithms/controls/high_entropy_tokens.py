"""Train on the high-entropy minority (Wang et al., 2025, "Beyond the 80/20 rule"; TRL's top_entropy_quantile)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.parts import Control
from covgym.algorithms.registry import register
from covgym.algorithms.token_selection import choose_top, global_token_count
from covgym.core.metrics import masked_mean

if TYPE_CHECKING:
    from torch import Tensor


@register
@dataclass
class HighEntropyTokens(Control):
    """Only the top ``⌈ρ·N⌉`` response tokens by the current policy's entropy keep their policy-gradient loss.

    ``N`` counts the response tokens of the global optimizer mini-batch (all data-parallel ranks); ties are broken
    by position, so exactly ``⌈ρ·N⌉`` tokens are trained. The others' per-token loss is multiplied by 0.
    ``high_entropy_normalization`` says what the policy term is averaged over:
    ``"response_tokens"`` (default; TRL's ``top_entropy_quantile``, trl/trainer/grpo_trainer.py: the entropy mask
    multiplies the per-token loss, the normaliser stays the completion-token count) or ``"selected_tokens"`` (the
    80/20 authors' code, which aggregates the loss over the selected tokens' mask: the selected tokens are weighted
    ``N/⌈ρ·N⌉``, so their policy term is 1/ρ times TRL's relative to KL and entropy terms; exact for
    ``token-mean`` aggregation). ρ = 0.2 is the paper's.
    """

    name = "high_entropy_tokens"
    description = "Policy gradient on the top-ρ fraction of tokens by entropy only"
    source = "Wang et al. 2025 (Beyond the 80/20 Rule, arXiv 2506.01939); TRL top_entropy_quantile"
    needs = frozenset({"token_entropy"})

    top_entropy_quantile: float = hyperparameter(0.2, "ρ, the fraction of response tokens (highest entropy) trained")
    high_entropy_normalization: str = hyperparameter(
        "response_tokens", "average the policy term over response_tokens (TRL) or selected_tokens (the authors')")

    def validate(self) -> None:
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise ValueError(f"top_entropy_quantile must be in (0, 1], got {self.top_entropy_quantile}")
        if self.high_entropy_normalization not in ("response_tokens", "selected_tokens"):
            raise ValueError(f"high_entropy_normalization must be response_tokens or selected_tokens, got "
                             f"{self.high_entropy_normalization!r}")

    def token_weights(self, log_probs: Tensor, advantages: Tensor, response_mask: Tensor, entropy: Tensor | None
                      ) -> tuple[Tensor | None, dict[str, float]]:
        entropy = self.require_entropy(entropy)
        total = global_token_count(response_mask)
        count = math.ceil(self.top_entropy_quantile * total - 1e-9)
        selected = choose_top(entropy, response_mask, count).to(log_probs.dtype)  # [B, T]
        metrics = {"high_entropy_tokens_frac": float(masked_mean(selected, response_mask))}
        if self.high_entropy_normalization == "selected_tokens" and 0 < count <= total:
            return selected * (total / min(count, total)), metrics
        return selected, metrics
