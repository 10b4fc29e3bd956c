"""The algorithm interface and the registry.

An algorithm is a dataclass whose fields are its hyperparameters (verl's names and defaults), so that
``covgym.algorithms.get("kl_cov")(kl_cov_ratio=2e-3)`` works and the CLI can build one flag per field.
Subclasses override one hook: ``compute_advantages`` (the estimator) or ``token_loss`` (the per-token objective);
``policy_loss`` adds what every algorithm can add (entropy bonus, KL to a reference) and the metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from covgym.lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

from covgym.batch import RolloutBatch
from covgym.metrics import masked_mean, token_covariance
from covgym.algorithms.functional import (LOSS_AGG_MODES, aggregate_loss, kl_penalty, ppo_clip_token_loss,
                                          selection_count)

#: Fraction of tokens whose mean covariance is reported as ``minibatch_cov_topk_mean`` by algorithms that select none
#: themselves (KL-Cov's paper setting for 7B models, k = 2e-3).
METRIC_TOPK_RATIO = 2e-3

_REGISTRY: dict[str, type["Algorithm"]] = {}


def register(cls: type["Algorithm"]) -> type["Algorithm"]:
    """Class decorator: list an algorithm under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name` to be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"algorithm name {cls.name!r} is already registered by {_REGISTRY[cls.name].__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    """Registered algorithm names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type["Algorithm"]:
    """The algorithm class registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known algorithms: {', '.join(names())}") from None


def hyperparameter(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field carrying its help text (read by the CLI and the docs table)."""
    return field(default=default, metadata={"help": help})


@dataclass
class Algorithm:
    """Base class: advantages from a batch, and a policy loss over tensors.

    Common hyperparameters live here (one place for each default): PPO clipping, loss aggregation, the entropy
    bonus and the KL-to-reference penalty, which every algorithm can add.

    Class attributes: ``name`` (registry key), ``description`` (one line), ``source`` (paper / reference code),
    ``needs_critic`` (the trainer must build a ``covgym.critic.Critic`` and fill ``batch.values``),
    ``needs_off_policy_minibatches`` (the loss does nothing on a fully on-policy mini-batch), and
    ``selected_metric`` (the metric name under which the fraction of tokens the loss singles out is reported).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    needs_critic: ClassVar[bool] = False
    needs_off_policy_minibatches: ClassVar[bool] = False
    selected_metric: ClassVar[str | None] = None

    clip_ratio: float = hyperparameter(0.2, "PPO clip range ε (used for low/high when those are unset)")
    clip_ratio_low: float | None = hyperparameter(None, "lower clip range ε_low (default: clip_ratio)")
    clip_ratio_high: float | None = hyperparameter(None, "upper clip range ε_high (default: clip_ratio)")
    clip_ratio_c: float | None = hyperparameter(3.0, "dual-clip bound c > 1 for negative advantages (None: off)")
    loss_agg_mode: str = hyperparameter("token-mean", f"loss aggregation: {', '.join(LOSS_AGG_MODES)}")
    loss_scale_factor: float | None = hyperparameter(
        None, "divisor of seq-mean-token-sum-norm (default: the padded length T)")
    entropy_coeff: float = hyperparameter(0.0, "entropy bonus coefficient (loss −= coeff·agg(H))")
    use_kl_loss: bool = hyperparameter(False, "add a KL penalty to a frozen reference policy")
    kl_loss_coef: float = hyperparameter(0.001, "coefficient of the KL-to-reference penalty")
    kl_loss_type: str = hyperparameter("low_var_kl", "KL estimator: k1, abs, k2 (mse), k3 (low_var_kl), k3+")

    def __post_init__(self) -> None:
        self.generator: torch.Generator | None = None
        self.validate()

    # ----------------------------------------------------------------- configuration
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for an out-of-range hyperparameter."""
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
        return dataclasses.asdict(self)

    def set_generator(self, generator: torch.Generator) -> None:
        """The explicit RNG for any random choice the loss makes (Clip-Cov), seeded by the run."""
        self.generator = generator

    @property
    def low(self) -> float:
        return self.clip_ratio if self.clip_ratio_low is None else self.clip_ratio_low

    @property
    def high(self) -> float:
        return self.clip_ratio if self.clip_ratio_high is None else self.clip_ratio_high

    # ----------------------------------------------------------------- hooks
    def advantages(self, batch: RolloutBatch) -> Tensor:
        """``[B, T]`` advantages, zero outside the response mask."""
        return self.compute_advantages(batch) * batch.response_mask

    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_advantages")

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-token objective ``[B, T]`` and ``[B, T]`` maps for the metrics. Default: PPO-clip with dual-clip."""
        return ppo_clip_token_loss(log_probs, old_log_probs, advantages, self.low, self.high, self.clip_ratio_c)

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
            entropy: ``[B, T]`` entropy of the current policy (with gradient) for the entropy bonus and metric.
            ref_log_probs: ``[B, T]`` reference log-probs for the KL penalty (needed when ``use_kl_loss``).
            global_token_count / global_seq_count: normalisers over the global mini-batch (data parallel): with
                them the per-rank losses *sum* to the loss of the whole mini-batch.
        Returns:
            ``(loss, metrics)``: ``pg_loss``, ``approx_kl``, ``clip_frac``, ``clip_frac_lower``,
            ``minibatch_cov_mean``, ``minibatch_cov_topk_mean`` (this mini-batch, current log-probs: distinct from
            the batch statistics ``cov_mean``/``cov_topk_mean`` the trainer logs), ``loss``, plus ``entropy`` (token mean) when given, ``kl_loss`` when used, and the
            algorithm's own (``selected_metric``, ``abs_kl``).
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
        token_loss, maps = self.token_loss(log_probs, old_log_probs, advantages, mask)

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
            entropy = neutral(entropy)
            metrics["entropy"] = float(masked_mean(entropy.detach(), mask))
            if self.entropy_coeff > 0:
                loss = loss - self.entropy_coeff * agg(entropy)
        if self.use_kl_loss:
            if ref_log_probs is None:
                raise ValueError("ref_log_probs is None but use_kl_loss=True needs reference log-probs")
            kl_term = agg(kl_penalty(log_probs, neutral(ref_log_probs), self.kl_loss_type))
            metrics["kl_loss"] = float(kl_term.detach())
            loss = loss + self.kl_loss_coef * kl_term
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def _covariance_metrics(self, log_probs: Tensor, advantages: Tensor, mask: Tensor, maps: dict[str, Tensor]
                            ) -> dict[str, float]:
        """``minibatch_cov_mean`` over masked tokens and ``minibatch_cov_topk_mean`` over the selected (or top-covariance) tokens."""
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
