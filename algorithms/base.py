"""The algorithm interface: the loss frame every algorithm shares, and the legacy one-class algorithm.

``AlgorithmCore`` is what the trainer and users call: ``advantages(batch)``, ``policy_loss(...)``, the step hook
``end_of_step(metrics)``, ``state_dict()``/``load_state_dict()`` and the declared ``needs``. Its ``policy_loss``
is one frame (masking, aggregation, metrics, the KL-to-reference term) with hooks that an algorithm fills:
``token_loss`` (the per-token objective), ``token_weights`` and ``loss_terms`` (what entropy controls add).
Algorithms built from parts (``covgym.algorithms.composition``) fill the hooks from their parts; ``Algorithm``
below is the older one-class form (one dataclass with every common hyperparameter), kept for user code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from covgym.core.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

from covgym.algorithms.functional import (LOSS_AGG_MODES, aggregate_loss, kl_penalty, ppo_clip_token_loss,
                                          selection_count)
from covgym.core.batch import RolloutBatch
from covgym.core.metrics import masked_mean, token_covariance

#: What an algorithm (or one of its parts) can ask of the trainer. The trainer reads ``algorithm.needs`` and never
#: probes for methods: ``critic`` (build a value model, fill ``batch.values``, call ``value_loss``),
#: ``reference_model`` (fill ``batch.ref_log_probs`` and pass ``ref_log_probs``), ``off_policy_minibatches`` (the
#: loss does nothing on a fully on-policy mini-batch: use several), ``token_entropy`` (pass the current policy's
#: per-token ``entropy`` with gradient), ``full_vocab_logits`` (statistics over the whole vocabulary at rollout).
NEEDS = ("critic", "reference_model", "off_policy_minibatches", "token_entropy", "full_vocab_logits")

#: Fraction of tokens whose mean covariance is reported as ``minibatch_cov_topk_mean`` by algorithms that select none
#: themselves (KL-Cov's paper setting for 7B models, k = 2e-3).
METRIC_TOPK_RATIO = 2e-3

#: Loss metrics that are one rank's *share* of the mini-batch's loss when ``policy_loss`` (or ``value_loss``) gets the
#: global token/sequence counts (data parallel): summed over ranks, not averaged, they equal the 1-process value.
SHARE_METRICS = frozenset({"pg_loss", "loss", "kl_loss", "value_loss"})


def hyperparameter(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field carrying its help text (read by the CLI and the docs table)."""
    return field(default=default, metadata={"help": help})


@dataclass
class AlgorithmCore:
    """What every algorithm is: advantages from a batch, a policy loss over tensors, a step hook, its needs.

    The fields here are the KL-to-reference term, which any algorithm can add. Class attributes: ``name``
    (registry key), ``description`` (one line), ``source`` (paper / reference code), ``needs_critic`` and
    ``needs_off_policy_minibatches`` (kept for older code; ``needs`` is the full declaration), ``uses_groups``
    (advantages compare responses to one prompt) and ``selected_metric`` (the metric name under which the fraction
    of tokens the loss singles out is reported).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    needs_critic: ClassVar[bool] = False
    needs_off_policy_minibatches: ClassVar[bool] = False
    uses_groups: ClassVar[bool] = True
    selected_metric: ClassVar[str | None] = None

    use_kl_loss: bool = hyperparameter(False, "add a KL penalty to a frozen reference policy")
    kl_loss_coef: float = hyperparameter(0.001, "coefficient of the KL-to-reference penalty")
    kl_loss_type: str = hyperparameter("low_var_kl", "KL estimator: k1, abs, k2 (mse), k3 (low_var_kl), k3+")

    #: the aggregation of the per-token loss; an algorithm that has these as hyperparameters shadows them
    loss_agg_mode: ClassVar[str] = "token-mean"
    loss_scale_factor: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        self.generator: torch.Generator | None = None
        self.validate()

    # ----------------------------------------------------------------- configuration
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for an out-of-range hyperparameter."""
        if self.kl_loss_coef < 0:
            raise ValueError(f"kl_loss_coef must be >= 0, got {self.kl_loss_coef}")
        try:
            kl_penalty(torch.zeros(1), torch.zeros(1), self.kl_loss_type)
        except ValueError as error:
            raise ValueError(f"kl_loss_type: {error}") from None

    @classmethod
    def hyperparameters(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def set_generator(self, generator: torch.Generator) -> None:
        """The explicit RNG for any random choice the loss makes (Clip-Cov), seeded by the run."""
        self.generator = generator

    @property
    def needs(self) -> frozenset[str]:
        """What the trainer must provide (see ``NEEDS``)."""
        wanted = set()
        if self.needs_critic:
            wanted.add("critic")
        if self.needs_off_policy_minibatches:
            wanted.add("off_policy_minibatches")
        if self.use_kl_loss:
            wanted.add("reference_model")
        return frozenset(wanted)

    # ----------------------------------------------------------------- between steps
    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Called by the trainer once per step with the step's metrics; returns metrics of its own to log.

        Parts that adapt a coefficient between steps do it here. The default does nothing.
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What must survive checkpoint and resume (adapted coefficients); plain Python values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.name or type(self).__name__} keeps no state, got {sorted(state)}")

    # ----------------------------------------------------------------- hooks
    def advantages(self, batch: RolloutBatch) -> Tensor:
        """``[B, T]`` advantages, zero outside the response mask."""
        return self.compute_advantages(batch) * batch.response_mask

    def advantages_and_returns(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None]:
        """``(advantages [B, T], returns [B, T] or None)``: returns are the critic's targets (``needs`` critic)."""
        return self.advantages(batch), None

    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_advantages")

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-token objective ``[B, T]`` and ``[B, T]`` maps for the metrics."""
        raise NotImplementedError(f"{type(self).__name__} must implement token_loss")

    def token_weights(self, log_probs: Tensor, advantages: Tensor, response_mask: Tensor, entropy: Tensor | None
                      ) -> tuple[Tensor | None, dict[str, float]]:
        """``[B, T]`` weights of the per-token loss (None: all 1) and metrics. Default: none."""
        return None, {}

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        """Scalar terms added to the policy loss (e.g. an entropy bonus), and metrics. Default: none.

        ``aggregate`` reduces a ``[B, T]`` tensor the way the policy loss is reduced.
        """
        return [], {}

    # ----------------------------------------------------------------- the loss
    def policy_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                    entropy: Tensor | None = None, ref_log_probs: Tensor | None = None,
                    global_token_count: float | None = None, global_seq_count: float | None = None
                    ) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss and float metrics for one mini-batch.

        Positions with mask 0 are replaced by neutral values before anything is computed, so whatever they hold
        (even inf or nan) gets exactly zero gradient and changes neither the loss nor the metrics.

        Args:
            log_probs, old_log_probs, advantages, response_mask: ``[B, T]``.
            entropy: ``[B, T]`` entropy of the current policy (with gradient) for entropy terms and the metric.
            ref_log_probs: ``[B, T]`` reference log-probs for the KL penalty (needed when ``use_kl_loss``).
            global_token_count / global_seq_count: normalisers over the global mini-batch (data parallel): with
                them the per-rank losses *sum* to the loss of the whole mini-batch.
        Returns:
            ``(loss, metrics)``: ``pg_loss``, ``approx_kl``, ``clip_frac``, ``clip_frac_lower``,
            ``minibatch_cov_mean``, ``minibatch_cov_topk_mean`` (this mini-batch, current log-probs: distinct from
            the batch statistics ``cov_mean``/``cov_topk_mean`` the trainer logs), ``loss``, plus ``entropy`` (token
            mean) when given, ``kl_loss`` when used, and the algorithm's own (``selected_metric``, ``abs_kl``, and
            its entropy controls', each prefixed by the control's name).
        """
        for name, value in (("old_log_probs", old_log_probs), ("advantages", advantages),
                            ("response_mask", response_mask), ("entropy", entropy), ("ref_log_probs", ref_log_probs)):
            if value is not None and value.shape != log_probs.shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(log_probs.shape)} "
                                 "(the shape of log_probs)")
        mask = response_mask.to(log_probs.dtype)
        valid = mask > 0

        def neutral(values: Tensor) -> Tensor:
            return torch.where(valid, values.to(log_probs.dtype), torch.zeros((), dtype=log_probs.dtype,
                                                                               device=log_probs.device))

        log_probs, old_log_probs, advantages = neutral(log_probs), neutral(old_log_probs), neutral(advantages)
        if entropy is not None:
            entropy = neutral(entropy)
        token_loss, maps = self.token_loss(log_probs, old_log_probs, advantages, mask)
        weights, weight_metrics = self.token_weights(log_probs, advantages, mask, entropy)
        if weights is not None:
            token_loss = token_loss * weights.to(token_loss.dtype)

        def agg(values: Tensor) -> Tensor:
            return aggregate_loss(values, mask, self.loss_agg_mode, global_token_count, global_seq_count,
                                  self.loss_scale_factor)

        def fraction(flags: Tensor) -> float:
            return float(masked_mean(flags.to(mask.dtype), mask))

        pg_loss = agg(token_loss)
        loss = pg_loss
        metrics: dict[str, float] = {
            "pg_loss": float(pg_loss.detach()),
            "approx_kl": float(masked_mean(old_log_probs - log_probs.detach(), mask)),
            "clip_frac": fraction(maps["clipped"]) if "clipped" in maps else 0.0,
            "clip_frac_lower": fraction(maps["dual_clipped"]) if "dual_clipped" in maps else 0.0,
        }
        metrics.update(self._covariance_metrics(log_probs, advantages, mask, maps))
        if "abs_kl" in maps:
            metrics["abs_kl"] = float(masked_mean(maps["abs_kl"].detach(), mask))
        if entropy is not None:
            metrics["entropy"] = float(masked_mean(entropy.detach(), mask))
        terms, term_metrics = self.loss_terms(agg, log_probs, advantages, mask, entropy)
        for term in terms:
            loss = loss + term
        if self.use_kl_loss:
            if ref_log_probs is None:
                raise ValueError("ref_log_probs is None but use_kl_loss=True needs reference log-probs")
            kl_term = agg(kl_penalty(log_probs, neutral(ref_log_probs), self.kl_loss_type))
            metrics["kl_loss"] = float(kl_term.detach())
            loss = loss + self.kl_loss_coef * kl_term
        metrics["loss"] = float(loss.detach())
        for extra in (weight_metrics, term_metrics):
            clash = set(extra) & set(metrics)
            if clash:
                raise ValueError(f"metric name(s) {sorted(clash)} reported twice by {self.name!r}")
            metrics.update(extra)
        return loss, metrics

    def _covariance_metrics(self, log_probs: Tensor, advantages: Tensor, mask: Tensor, maps: dict[str, Tensor]
                            ) -> dict[str, float]:
        """``minibatch_cov_mean`` over masked tokens and ``minibatch_cov_topk_mean`` over the selected (or
        top-covariance) tokens."""
        covariance = maps.get("covariance")
        if covariance is None:
            covariance = token_covariance(log_probs, advantages, mask)
        selected = maps.get("selected")
        if selected is None:  # report the top METRIC_TOPK_RATIO of this shard's tokens
            valid_covariance = covariance[mask > 0]
            count = min(selection_count(METRIC_TOPK_RATIO, valid_covariance.numel()), valid_covariance.numel())
            top = torch.topk(valid_covariance, count).values if count else valid_covariance
            topk_mean = float(top.mean()) if count else 0.0
        else:
            topk_mean = float(covariance[selected].mean()) if bool(selected.any()) else 0.0
        metrics = {"minibatch_cov_mean": float(masked_mean(covariance, mask)), "minibatch_cov_topk_mean": topk_mean}
        if self.selected_metric is not None and selected is not None:
            metrics[self.selected_metric] = float(masked_mean(selected.to(mask.dtype), mask))
        return metrics


@dataclass
class Algorithm(AlgorithmCore):
    """The one-class form: every common hyperparameter on one dataclass, PPO-clip by default, entropy bonus.

    Kept so that code written against it keeps working; new methods are built from parts
    (``covgym.algorithms.composition``). Subclasses override ``compute_advantages`` and/or ``token_loss``.
    """

    clip_ratio: float = hyperparameter(0.2, "PPO clip range ε (used for low/high when those are unset)")
    clip_ratio_low: float | None = hyperparameter(None, "lower clip range ε_low (default: clip_ratio)")
    clip_ratio_high: float | None = hyperparameter(None, "upper clip range ε_high (default: clip_ratio)")
    clip_ratio_c: float | None = hyperparameter(3.0, "dual-clip bound c > 1 for negative advantages (None: off)")
    loss_agg_mode: str = hyperparameter("token-mean", f"loss aggregation: {', '.join(LOSS_AGG_MODES)}")
    loss_scale_factor: float | None = hyperparameter(
        None, "divisor of seq-mean-token-sum-norm (default: the padded length T)")
    entropy_coeff: float = hyperparameter(0.0, "entropy bonus coefficient (loss −= coeff·agg(H))")

    def validate(self) -> None:
        super().validate()
        if self.clip_ratio < 0:
            raise ValueError(f"clip_ratio must be >= 0, got {self.clip_ratio}")
        for name in ("clip_ratio_low", "clip_ratio_high"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.clip_ratio_c is not None and self.clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1.0 (or None to disable dual-clip), got {self.clip_ratio_c}")
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"loss_agg_mode must be one of {', '.join(LOSS_AGG_MODES)}, got {self.loss_agg_mode!r}")
        if self.loss_scale_factor is not None and self.loss_scale_factor <= 0:
            raise ValueError(f"loss_scale_factor must be > 0, got {self.loss_scale_factor}")
        if self.entropy_coeff < 0:
            raise ValueError(f"entropy_coeff must be >= 0, got {self.entropy_coeff}")

    @property
    def needs(self) -> frozenset[str]:
        return super().needs | ({"token_entropy"} if self.entropy_coeff > 0 else set())

    @property
    def low(self) -> float:
        return self.clip_ratio if self.clip_ratio_low is None else self.clip_ratio_low

    @property
    def high(self) -> float:
        return self.clip_ratio if self.clip_ratio_high is None else self.clip_ratio_high

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        """Default: PPO-clip with dual-clip."""
        return ppo_clip_token_loss(log_probs, old_log_probs, advantages, self.low, self.high, self.clip_ratio_c)

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        if entropy is not None and self.entropy_coeff > 0:
            return [-(self.entropy_coeff * aggregate(entropy))], {}
        return [], {}
