"""Importing this module registers every covgym policy loss in verl (as ``covgym_<name>``).

verl's workers are separate (Ray) processes, each with its own registry, so the registration must run in each of
them. verl imports the module named by ``actor_rollout_ref.model.external_lib`` in every worker as it builds the
model::

    actor_rollout_ref.model.external_lib=covgym.adapters.verl_plugin \\
    actor_rollout_ref.actor.policy_loss.loss_mode=covgym_kl_cov
"""

from __future__ import annotations

from covgym.adapters.verl import register_verl_policy_losses

#: The names registered in verl's policy-loss registry by importing this module.
REGISTERED: list[str] = register_verl_policy_losses()
