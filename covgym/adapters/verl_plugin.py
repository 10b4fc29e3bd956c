"""Importing this module registers every covgym policy loss and advantage estimator in verl (as ``covgym_<name>``).

verl's workers are separate (Ray) processes, each with its own registry, so the registration must run in each of
them. verl imports the module named by ``actor_rollout_ref.model.external_lib`` wherever it builds the model config
(``verl/workers/config/model.py``, ``HFModelConfig.__post_init__``): in every worker, where the losses are called,
and in the v1 trainer (``verl/trainer/ppo/v1/trainer_base.py``, ``_init_tokenizer``), where advantages are
computed. ``VERL_USE_EXTERNAL_MODULES=covgym.adapters.verl_plugin`` in the environment makes every process that
imports verl import it too (``verl/__init__.py``)::

    actor_rollout_ref.model.external_lib=covgym.adapters.verl_plugin \\
    actor_rollout_ref.actor.policy_loss.loss_mode=covgym_kl_cov \\
    algorithm.adv_estimator=covgym_rloo

Compositions (``grpo+clip_cov+covariance_kernel``) and fixed hyperparameters are registered by a module of your
own that calls ``register_verl_policy_losses([...])`` / ``register_verl_advantage_estimators(...)``, named the same
way.
"""

from __future__ import annotations

from covgym.adapters.verl import register_verl_advantage_estimators, register_verl_policy_losses

#: The names registered in verl's policy-loss registry by importing this module.
REGISTERED: list[str] = register_verl_policy_losses()
#: The names registered in verl's advantage-estimator registry by importing this module.
REGISTERED_ESTIMATORS: list[str] = register_verl_advantage_estimators()
