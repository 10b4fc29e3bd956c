"""The three kinds of part an algorithm is composed of: an advantage estimator, a policy loss, entropy controls.

A part is a dataclass whose fields are its hyperparameters (verl's names where verl has the knob), with class
attributes ``name`` (its registry key and its token in ``--algo a+b+c``), ``description``, ``source`` and
``needs`` (what it asks of the trainer, from ``covgym.algorithms.base.NEEDS``). A composition
(``covgym.algorithms.composition``) builds one instance of each chosen part from its own fields and calls the hooks
below; a part never sees the others. Register a part with ``covgym.algorithms.register``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from covgym.algorithms.base import hyperparameter
from covgym.algorithms.functional import LOSS_AGG_MODES

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from covgym.core.batch import RolloutBatch

KINDS = ("estimator", "loss", "control")


@dataclass
class Part:
    """Base of every part: hyperparameters as fields, validated on construction."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        self.generator: torch.Generator | None = None
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for an out-of-range hyperparameter."""

    @classmethod
    def hyperparameters(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def set_generator(self, generator: torch.Generator) -> None:
        """The run's explicit RNG for any random choice the part makes."""
        self.generator = generator


@dataclass
class Estimator(Part):
    """An advantage estimator: ``compute(batch) -> [B, T]`` (zero outside the response mask).

    ``uses_groups``: the advantages compare responses to the same prompt (a group of one carries no signal).
    An estimator that needs a critic also returns the value targets (``compute_with_returns``) and owns the
    value loss.
    """

    kind: ClassVar[str] = "estimator"
    uses_groups: ClassVar[bool] = True
    #: group invariants the advantages satisfy, checked by ``covgym.testing.check_algorithm``
    advantage_invariants: ClassVar[tuple[str, ...]] = ()

    def compute(self, batch: RolloutBatch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute")

    def compute_with_returns(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None]:
        return self.compute(batch), None


@dataclass
class PolicyLoss(Part):
    """A policy loss: the per-token objective ``token_loss -> ([B, T], maps)`` and how it is aggregated.

    ``maps`` may hold ``[B, T]`` tensors ``clipped``, ``dual_clipped``, ``selected``, ``covariance``, ``abs_kl``
    for the metrics; ``selected_metric`` names the fraction of ``selected`` tokens.
    """

    kind: ClassVar[str] = "loss"
    selected_metric: ClassVar[str | None] = None
    #: what the loss's clip range bounds, checked by ``covgym.testing.check_algorithm`` (property ``clip``):
    #: ``"token_ratio"`` (no gradient for a token whose ratio is past the clip in its advantage's direction),
    #: ``"weight"`` (the clip bounds a detached weight only, as CISPO) or None (no clip, or not checked)
    clip_mode: ClassVar[str | None] = None

    loss_agg_mode: str = hyperparameter("token-mean", f"loss aggregation: {', '.join(LOSS_AGG_MODES)}")
    loss_scale_factor: float | None = hyperparameter(
        None, "divisor of seq-mean-token-sum-norm (default: the padded length T)")

    def validate(self) -> None:
        if self.loss_agg_mode not in LOSS_AGG_MODES:
            raise ValueError(f"loss_agg_mode must be one of {', '.join(LOSS_AGG_MODES)}, got {self.loss_agg_mode!r}")
        if self.loss_scale_factor is not None and self.loss_scale_factor <= 0:
            raise ValueError(f"loss_scale_factor must be > 0, got {self.loss_scale_factor}")

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must implement token_loss")


@dataclass
class ClipRange:
    """The clip range fields shared by the losses that clip a ratio (verl's names and default ε = 0.2)."""

    clip_mode: ClassVar[str | None] = "token_ratio"

    clip_ratio: float = hyperparameter(0.2, "clip range ε (used for low/high when those are unset)")
    clip_ratio_low: float | None = hyperparameter(None, "lower clip range ε_low (default: clip_ratio)")
    clip_ratio_high: float | None = hyperparameter(None, "upper clip range ε_high (default: clip_ratio)")

    def validate_clip_range(self) -> None:
        if self.clip_ratio < 0:
            raise ValueError(f"clip_ratio must be >= 0, got {self.clip_ratio}")
        for name in ("clip_ratio_low", "clip_ratio_high"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def low(self) -> float:
        return self.clip_ratio if self.clip_ratio_low is None else self.clip_ratio_low

    @property
    def high(self) -> float:
        return self.clip_ratio if self.clip_ratio_high is None else self.clip_ratio_high


@dataclass
class Control(Part):
    """An entropy control. Every hook has a neutral default, so a control overrides only what it does.

    - ``transform_advantages(advantages, batch)``: once per rollout, after the estimator (reweight, mask).
    - ``token_weights(...)``: per mini-batch, ``[B, T]`` factors on the per-token loss (None: all 1).
    - ``loss_terms(aggregate, ...)``: per mini-batch, scalar terms added to the loss (e.g. an entropy bonus).
    - ``end_of_step(metrics)``: once per step, after the update, with the step's metrics (adapt a coefficient).
    - ``state_dict``/``load_state_dict``: what survives checkpoint and resume.
    ``end_of_step`` sees the step's metrics; metrics measured in ``transform_advantages`` are returned from it.
    Metrics a control reports are prefixed by its name, so they never collide with another part's.
    """

    kind: ClassVar[str] = "control"
    #: the control's intended effect on entropy, verified by ``covgym.testing.check_algorithm`` (property
    #: ``entropy_effect``) against the same algorithm without the control: ``"raise"``, ``"lower"``, ``"target"``
    #: (raise below ``entropy_band()``, lower above it, for a one-step first-order change) or None (not declared)
    entropy_effect: ClassVar[str | None] = None

    def entropy_band(self) -> tuple[float, float]:
        """``(low, high)`` nats: a ``"target"`` control must not lower entropy below ``low`` nor raise it above
        ``high`` (a point target has ``low == high``)."""
        raise NotImplementedError(f"control {self.name!r} declares entropy_effect='target' but no entropy_band()")

    def transform_advantages(self, advantages: Tensor, batch: RolloutBatch) -> Tensor:
        return advantages

    def token_weights(self, log_probs: Tensor, advantages: Tensor, response_mask: Tensor, entropy: Tensor | None
                      ) -> tuple[Tensor | None, dict[str, float]]:
        return None, {}

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        return [], {}

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"control {self.name!r} keeps no state, got {sorted(state)}")

    def require_entropy(self, entropy: Tensor | None) -> Tensor:
        """The ``entropy`` argument of ``policy_loss``, or a one-line error saying this control needs it."""
        if entropy is None:
            raise ValueError(f"control {self.name!r} needs the per-token entropy: pass entropy=... to policy_loss")
        return entropy


class ScheduledControl(Control):
    """A control whose rule follows the training step (a schedule, an annealed band): it counts steps from
    ``first_step``, reports what it measured at the last rollout (``self.last``) once per step, and keeps the count
    across checkpoint and resume."""

    first_step: ClassVar[int] = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.step = self.first_step
        self.last: dict[str, float] = {}

    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        self.step += 1
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
