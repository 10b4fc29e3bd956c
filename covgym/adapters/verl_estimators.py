"""covgym's advantage estimators in verl's advantage-estimator registry, as ``covgym_<name>``.

verl computes advantages once per step on its driver, between the old-log-prob pass and the update:
``compute_advantage`` (``verl/trainer/ppo/ray_trainer.py``, line 187 in 0.9.1) looks up any estimator other than its
own ``gae`` and ``grpo`` with ``get_adv_estimator_fn(algorithm.adv_estimator)`` and calls it with the keywords
``token_level_rewards [B, T]``, ``response_mask [B, T]``, ``config`` (the ``algorithm`` section) and, when the batch
has them, ``index`` (each response's prompt uid) and ``reward_baselines``; it stores the ``(advantages [B, T],
returns [B, T])`` it gets back. An estimator registered here turns those into the covgym ``RolloutBatch`` an
estimator reads (scores are the row sums of ``token_level_rewards``, groups are the distinct uids), calls the
covgym algorithm's ``advantages_and_returns`` on it, and returns ``(advantages, returns)`` with ``returns =
advantages`` for the outcome estimators, as verl's own do::

    register_verl_advantage_estimators()   # -> ["covgym_dr_grpo", "covgym_gae", "covgym_gpg", "covgym_grpo", ...]
    # then: algorithm.adv_estimator=covgym_passk

Hyperparameters: ``hyperparameters[name]`` (given at registration) win, then ``config.<field>`` (e.g.
``+algorithm.passk_k=8``), then covgym's default. verl's ``algorithm.norm_adv_by_std_in_grpo`` (default True) is
read by ``covgym_grpo`` and ``covgym_quantile_baseline`` but not by ``covgym_dr_grpo``, which is GRPO without it.

The driver holds the whole batch, so batch-wide statistics (GPG's α, REINFORCE++'s whitening) are over the global
batch, as in covgym's trainer. ``covgym_gae`` computes GAE when given ``values``, but verl 0.9.1 passes critic values
only to its own ``gae`` (``ray_trainer.compute_advantage``), so it stops with a message pointing there: verl's
``gae`` equals covgym's (``tests/test_adapters_verl_estimators.py``). Controls that transform advantages need the
rollout's entropies and log-probs, which the call does not carry: ``covgym.adapters.verl_support`` refuses them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

import covgym.algorithms as algorithms
from covgym.adapters.verl_common import PREFIX, core_algos, from_config, rank_local_selection
from covgym.adapters.verl_support import check_estimator_support
from covgym.core.batch import RolloutBatch

#: verl config keys an estimator must not read although it has a field of that name: verl's
#: ``norm_adv_by_std_in_grpo`` defaults to True, and Dr. GRPO is defined by leaving it off.
NOT_FROM_CONFIG: dict[str, frozenset[str]] = {"dr_grpo": frozenset({"norm_adv_by_std_in_grpo"})}


def group_ids_from_index(index: Sequence[Any] | Tensor) -> Tensor:
    """``[B]`` long group ids from verl's ``index`` (one prompt uid per response): equal uids, equal ids."""
    uids = index.tolist() if hasattr(index, "tolist") else list(index)
    slots: dict[Any, int] = {}
    return torch.tensor([slots.setdefault(uid, len(slots)) for uid in uids], dtype=torch.long)


def estimator_batch(token_level_rewards: Tensor, response_mask: Tensor, index: Sequence[Any] | Tensor,
                    values: Tensor | None = None) -> RolloutBatch:
    """The ``RolloutBatch`` a covgym estimator reads, from what verl's estimator call gives (all ``[B, T]``).

    ``token_rewards`` are verl's ``token_level_rewards`` (so an estimator's score is their row sum, as in verl);
    log-probs and entropies are not in verl's call and are NaN here, so nothing can use them unnoticed.
    """
    if token_level_rewards.dim() != 2 or response_mask.shape != token_level_rewards.shape:
        raise ValueError(f"token_level_rewards and response_mask must be [B, T] of one shape, got "
                         f"{tuple(token_level_rewards.shape)} and {tuple(response_mask.shape)}")
    group_ids = group_ids_from_index(index)
    if group_ids.numel() != token_level_rewards.shape[0]:
        raise ValueError(f"index has {group_ids.numel()} uids for {token_level_rewards.shape[0]} responses")
    dtype = token_level_rewards.dtype if token_level_rewards.is_floating_point() else torch.float32
    rewards = token_level_rewards.to(dtype)
    mask = response_mask.to(dtype)
    unknown = torch.full_like(rewards, float("nan"))
    return RolloutBatch(input_ids=torch.zeros(rewards.shape, dtype=torch.long, device=rewards.device),
                        attention_mask=torch.ones(rewards.shape, dtype=torch.long, device=rewards.device),
                        response_mask=mask, old_log_probs=unknown, rewards=rewards.sum(-1),
                        group_ids=group_ids.to(rewards.device), entropies=unknown.clone(),
                        values=None if values is None else values.to(dtype), token_rewards=rewards)


def _estimator_fields(algorithm_class: type) -> set[str]:
    estimator = getattr(algorithm_class, "estimator_class", None)
    fields = (estimator or algorithm_class).hyperparameters()
    return {field.name for field in fields}


def verl_advantage_estimator(name: str, hyperparameters: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """covgym's ``name`` advantages as a function of verl's estimator signature (usable without verl installed).

    Args:
        name: a covgym estimator part (``covgym.algorithms.part_names("estimator")``) or an algorithm name; its
            advantages are ``covgym.algorithms.get(name)(...).advantages_and_returns(batch)``.
        hyperparameters: fixed hyperparameters of the estimator; they override verl's ``algorithm`` config.
    Raises:
        ValueError: an unknown hyperparameter, or an out-of-range one (the estimator's own check).
        NotImplementedError: ``name`` has controls verl's estimator call cannot carry (the message says why).
    """
    algorithm_class = algorithms.get(name)
    check_estimator_support(name, algorithm_class)
    fixed = dict(hyperparameters or {})
    known = _estimator_fields(algorithm_class)
    unknown = sorted(set(fixed) - known)
    if unknown:
        raise ValueError(f"hyperparameters for estimator {name!r}: unknown field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known)) or 'none'}")
    algorithm_class(**fixed)  # an out-of-range fixed value fails here, at registration
    readable = known - NOT_FROM_CONFIG.get(name, frozenset())
    needs_critic = "critic" in algorithm_class().needs

    def estimator(token_level_rewards: Tensor, response_mask: Tensor, index: Sequence[Any] | None = None,
                  config: Any = None, values: Tensor | None = None, **unused: Any) -> tuple[Tensor, Tensor]:
        """``(advantages [B, T], returns [B, T])`` under verl's calling convention."""
        if needs_critic and values is None:
            raise ValueError(f"{PREFIX}{name}: verl passed no critic values; verl 0.9.1 passes them only to its own "
                             "'gae' estimator: set algorithm.adv_estimator=gae (it computes covgym's GAE)")
        if index is None:
            if algorithm_class.uses_groups:
                raise ValueError(f"{PREFIX}{name}: verl passed no index (the prompt uid of each response); group "
                                 "advantages need it (verl adds it when the batch has non_tensor_batch['uid'])")
            index = range(token_level_rewards.shape[0])
        batch = estimator_batch(token_level_rewards, response_mask, index, values)
        algorithm = algorithm_class(**{**from_config([config], readable), **fixed})
        with torch.no_grad(), rank_local_selection():
            advantages, returns = algorithm.advantages_and_returns(batch)
        return advantages, advantages if returns is None else returns

    estimator.__name__ = f"{PREFIX}{name}"
    estimator.__qualname__ = estimator.__name__
    estimator.covgym_estimator = name  # marks it as covgym's, so registering again may replace it
    return estimator


def register_verl_advantage_estimators(names: list[str] | None = None, prefix: str = PREFIX,
                                       hyperparameters: Mapping[str, Mapping[str, Any]] | None = None
                                       ) -> list[str]:
    """Register covgym's estimators (default: every estimator part) in verl as ``<prefix><name>``.

    Registering again replaces covgym's earlier entries (verl's ``register_adv_est`` refuses a different function
    under a taken name, so a second registration with other hyperparameters would otherwise fail); a name taken by
    something else is verl's error.

    Returns:
        The names registered in verl, sorted.
    Raises:
        ImportError: verl is not importable, or has no advantage-estimator registry.
    """
    registry = core_algos()
    if not hasattr(registry, "register_adv_est"):
        raise ImportError("this verl has no advantage-estimator registry (core_algos.register_adv_est); "
                          "upgrade verl to use covgym's estimators there")
    chosen = algorithms.part_names("estimator") if names is None else list(names)
    overrides = dict(hyperparameters or {})
    unknown = sorted(set(overrides) - set(chosen))
    if unknown:
        raise ValueError(f"hyperparameters given for estimator(s) not being registered: {', '.join(unknown)}")
    table = getattr(registry, "ADV_ESTIMATOR_REGISTRY", {})
    # every function is built (and checked) before any is registered: a refused name leaves verl's registry as it was
    functions = {prefix + name: verl_advantage_estimator(name, overrides.get(name)) for name in chosen}
    for registered_name, function in functions.items():
        if getattr(table.get(registered_name), "covgym_estimator", None) is not None:
            del table[registered_name]
        registry.register_adv_est(registered_name)(function)
    return sorted(functions)


__all__ = ["NOT_FROM_CONFIG", "estimator_batch", "group_ids_from_index", "register_verl_advantage_estimators",
           "verl_advantage_estimator"]
