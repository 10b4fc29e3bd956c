"""A stand-in of verl's ``verl.trainer.ppo.core_algos`` registries, so the verl adapters are tested without verl.

It has what the adapters call, with verl 0.9.1's behaviour: ``register_policy_loss`` / ``get_policy_loss_fn``
(a later registration replaces an earlier one) and ``register_adv_est`` / ``get_adv_estimator_fn`` /
``ADV_ESTIMATOR_REGISTRY`` (a different function under a taken name is an error, as in verl).
"""

from __future__ import annotations

import sys
import types


def make_core_algos(vanilla_annotation: str = "tuple[torch.Tensor, dict[str, Any]]") -> types.ModuleType:
    """A minimal stand-in of verl's ``core_algos`` policy-loss and advantage-estimator registries."""
    core = types.ModuleType("verl.trainer.ppo.core_algos")
    core.POLICY_LOSS_REGISTRY = {}
    core.ADV_ESTIMATOR_REGISTRY = {}

    def register_policy_loss(name):
        def decorator(func):
            core.POLICY_LOSS_REGISTRY[name] = func
            return func
        return decorator

    def get_policy_loss_fn(name):
        if name not in core.POLICY_LOSS_REGISTRY:
            raise ValueError(f"Unsupported loss mode: {name}")
        return core.POLICY_LOSS_REGISTRY[name]

    def register_adv_est(name):
        def decorator(func):
            if name in core.ADV_ESTIMATOR_REGISTRY and core.ADV_ESTIMATOR_REGISTRY[name] != func:
                raise ValueError(f"Adv estimator {name} has already been registered")
            core.ADV_ESTIMATOR_REGISTRY[name] = func
            return func
        return decorator

    def get_adv_estimator_fn(name):
        if name not in core.ADV_ESTIMATOR_REGISTRY:
            raise ValueError(f"Unknown advantage estimator simply: {name}")
        return core.ADV_ESTIMATOR_REGISTRY[name]

    def compute_policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                    config=None, rollout_is_weights=None):
        raise NotImplementedError

    compute_policy_loss_vanilla.__annotations__["return"] = vanilla_annotation
    core.register_policy_loss, core.get_policy_loss_fn = register_policy_loss, get_policy_loss_fn
    core.register_adv_est, core.get_adv_estimator_fn = register_adv_est, get_adv_estimator_fn
    core.compute_policy_loss_vanilla = compute_policy_loss_vanilla
    return core


def install(monkeypatch, core: types.ModuleType) -> types.ModuleType:
    """Put ``core`` in ``sys.modules`` as ``verl.trainer.ppo.core_algos`` (with empty parent packages)."""
    for name in ("verl", "verl.trainer", "verl.trainer.ppo"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.core_algos", core)
    return core


def builtin_part_names(kind: str) -> list[str]:
    """covgym's own parts of ``kind``: other test files register plugin parts in the same process (a worker runs
    several files), which a check of "every built-in part" must not count."""
    import covgym.algorithms as algorithms

    return [name for name in algorithms.part_names(kind)
            if algorithms.part(name).__module__.startswith("covgym.algorithms.")]
