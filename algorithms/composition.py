"""An algorithm as a composition of parts: one estimator, one policy loss, any number of entropy controls.

``compose(estimator, loss, controls, defaults)`` builds a dataclass whose fields are the union of the parts'
hyperparameters (plus the KL-to-reference fields every algorithm has), so that
``covgym.algorithms.get("rloo+kl_cov")(kl_cov_ratio=2e-3)`` works and the CLI can build one flag per field. Each
instance builds its parts from its own field values and fills ``AlgorithmCore``'s hooks from them. Subclassing a
composition (``@dataclass class Mine(GRPO)``) and overriding ``compute_advantages`` or ``token_loss`` works as
with the one-class ``Algorithm``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from covgym.algorithms.base import AlgorithmCore
from covgym.algorithms.parts import Control, Estimator, PolicyLoss

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from covgym.core.batch import RolloutBatch

_CORE_FIELDS = frozenset(f.name for f in dataclasses.fields(AlgorithmCore))


@dataclass
class Composition(AlgorithmCore):
    """Base of every composed algorithm; ``compose`` sets the part classes and the fields."""

    estimator_class: ClassVar[type[Estimator]]
    loss_class: ClassVar[type[PolicyLoss]]
    control_classes: ClassVar[tuple[type[Control], ...]] = ()

    def __post_init__(self) -> None:
        def build(part_class: type) -> Any:
            return part_class(**{f.name: getattr(self, f.name) for f in dataclasses.fields(part_class)})

        self.estimator: Estimator = build(self.estimator_class)
        self.loss: PolicyLoss = build(self.loss_class)
        self.controls: list[Control] = [build(c) for c in self.control_classes]
        super().__post_init__()

    @property
    def parts(self) -> list[Any]:
        return [self.estimator, self.loss, *self.controls]

    @property
    def advantage_invariants(self) -> tuple[str, ...]:
        """The estimator's group invariants, unless a control or a subclass changes the advantages."""
        changed = type(self).compute_advantages is not Composition.compute_advantages or any(
            type(c).transform_advantages is not Control.transform_advantages for c in self.controls)
        return () if changed else tuple(self.estimator.advantage_invariants)

    @property
    def needs(self) -> frozenset[str]:
        wanted = set(super().needs)
        for part in self.parts:
            wanted |= part.needs
        return frozenset(wanted)

    def set_generator(self, generator: torch.Generator) -> None:
        super().set_generator(generator)
        for part in self.parts:
            part.set_generator(generator)

    # the ClipRange conveniences of the one-class form, for subclasses that call them in token_loss
    @property
    def low(self) -> float:
        return self.loss.low

    @property
    def high(self) -> float:
        return self.loss.high

    # ----------------------------------------------------------------- hooks filled by the parts
    def compute_advantages(self, batch: RolloutBatch) -> Tensor:
        return self.estimator.compute(batch)

    def advantages_and_returns(self, batch: RolloutBatch) -> tuple[Tensor, Tensor | None]:
        if self.needs_critic:
            advantages, returns = self.estimator.compute_with_returns(batch)
            advantages = advantages * batch.response_mask
        else:
            advantages, returns = self.compute_advantages(batch) * batch.response_mask, None
        for control in self.controls:
            advantages = control.transform_advantages(advantages, batch) * batch.response_mask
        return advantages, returns

    def advantages(self, batch: RolloutBatch) -> Tensor:
        return self.advantages_and_returns(batch)[0]

    def token_loss(self, log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, response_mask: Tensor
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss.token_loss(log_probs, old_log_probs, advantages, response_mask)

    def token_weights(self, log_probs: Tensor, advantages: Tensor, response_mask: Tensor, entropy: Tensor | None
                      ) -> tuple[Tensor | None, dict[str, float]]:
        weights, metrics = None, {}
        for control in self.controls:
            factor, found = control.token_weights(log_probs, advantages, response_mask, entropy)
            _merge(metrics, found, control.name)
            if factor is not None:
                weights = factor if weights is None else weights * factor
        return weights, metrics

    def loss_terms(self, aggregate, log_probs: Tensor, advantages: Tensor, response_mask: Tensor,
                   entropy: Tensor | None) -> tuple[list[Tensor], dict[str, float]]:
        terms, metrics = [], {}
        for control in self.controls:
            found_terms, found = control.loss_terms(aggregate, log_probs, advantages, response_mask, entropy)
            terms.extend(found_terms)
            _merge(metrics, found, control.name)
        return terms, metrics

    def value_loss(self, values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor,
                   global_token_count: float | None = None, global_seq_count: float | None = None
                   ) -> tuple[Tensor, dict[str, float]]:
        """The critic's loss (an estimator that ``needs`` a critic defines it), aggregated like the policy loss."""
        return self.estimator.value_loss(values, old_values, returns, response_mask, self.loss_agg_mode,
                                         self.loss_scale_factor, global_token_count, global_seq_count)

    # ----------------------------------------------------------------- between steps
    def end_of_step(self, metrics: dict[str, Any]) -> dict[str, float]:
        found: dict[str, float] = {}
        for control in self.controls:
            _merge(found, control.end_of_step(metrics), control.name)
        return found

    def state_dict(self) -> dict[str, Any]:
        return {control.name: control.state_dict() for control in self.controls if control.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        by_name = {control.name: control for control in self.controls}
        unknown = sorted(set(state) - set(by_name))
        if unknown:
            raise ValueError(f"saved algorithm state for {', '.join(unknown)}, which {self.name!r} does not have")
        for name, part_state in state.items():
            by_name[name].load_state_dict(part_state)


def _merge(into: dict[str, float], found: dict[str, float], owner: str) -> None:
    clash = set(found) & set(into)
    if clash:
        raise ValueError(f"metric name(s) {sorted(clash)} of control {owner!r} reported twice")
    into.update(found)


def compose(name: str, estimator: type[Estimator], loss: type[PolicyLoss], controls: tuple[type[Control], ...] = (),
            defaults: dict[str, Any] | None = None, description: str = "", source: str = "",
            class_name: str | None = None) -> type[Composition]:
    """A new ``Composition`` class: the parts' hyperparameters as fields, ``defaults`` overriding theirs.

    Raises ``ValueError`` when two parts declare the same hyperparameter or a default names no hyperparameter.
    """
    fields: list[tuple[str, Any, dataclasses.Field]] = []
    owner: dict[str, str] = {}
    for part in (estimator, loss, *controls):
        for f in dataclasses.fields(part):
            if f.name in _CORE_FIELDS:
                raise ValueError(f"part {part.name!r} declares {f.name!r}, which every algorithm already has")
            if f.name in owner:
                raise ValueError(f"parts {owner[f.name]!r} and {part.name!r} both declare the hyperparameter "
                                 f"{f.name!r}; they cannot be combined")
            owner[f.name] = part.name
            fields.append((f.name, f.type, f))
    defaults = dict(defaults or {})
    unknown = sorted(set(defaults) - set(owner) - _CORE_FIELDS)
    if unknown:
        raise ValueError(f"preset {name!r}: {', '.join(unknown)} not hyperparameter(s) of its parts")
    spec = []
    for field_name, field_type, f in fields:
        default = defaults.get(field_name, f.default)
        spec.append((field_name, field_type, dataclasses.field(default=default, metadata=f.metadata)))
    core_defaults = {k: v for k, v in defaults.items() if k in _CORE_FIELDS}
    for field_name, value in core_defaults.items():
        core = next(f for f in dataclasses.fields(AlgorithmCore) if f.name == field_name)
        spec.append((field_name, core.type, dataclasses.field(default=value, metadata=core.metadata)))
    namespace = {
        "name": name, "description": description or " + ".join(p.description for p in (estimator, loss, *controls)
                                                                 if p.description),
        "source": source or "; ".join(p.source for p in (estimator, loss, *controls) if p.source),
        "estimator_class": estimator, "loss_class": loss, "control_classes": tuple(controls),
        "needs_critic": "critic" in estimator.needs,
        "needs_off_policy_minibatches": any("off_policy_minibatches" in p.needs for p in (estimator, loss, *controls)),
        "uses_groups": estimator.uses_groups, "selected_metric": loss.selected_metric,
        "__module__": __name__,
    }
    cls = dataclasses.make_dataclass(class_name or f"Composition_{name.replace('+', '_')}", spec,
                                     bases=(Composition,), namespace=namespace)
    cls.__doc__ = (f"{name}: {' + '.join(p.name for p in (estimator, loss, *controls))}. "
                   f"{namespace['description']}.")
    return cls
