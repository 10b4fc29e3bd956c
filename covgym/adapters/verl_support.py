"""Which covgym parts verl's calls can carry, and the one-line "not supported yet in verl" errors for the rest.

verl (0.9.1) gives covgym two places to act, and neither has a step hook:

- the policy loss, called per micro-batch in every worker with ``old_log_prob, log_prob, advantages,
  response_mask, loss_agg_mode, config, rollout_is_weights`` (``verl/workers/utils/losses.py``, ``ppo_loss``): no
  token entropy, although verl computes it there for its own entropy bonus;
- the advantage estimator, called once per step on the driver with ``token_level_rewards, response_mask, config``
  and ``index`` (``verl/trainer/ppo/ray_trainer.py``, ``compute_advantage``): no log-probs, no entropies.

So a control that only weights tokens or adds a term from log-probs and advantages (``covariance_kernel``) folds
into the loss; the entropy bonus is verl's own ``actor.entropy_coeff``; and a control that keeps state across steps
(``end_of_step``), needs the token entropy inside the loss, or transforms advantages from the rollout's entropies
is refused when it is registered, with the reason. A trainer extension could feed ``end_of_step`` on the driver, but
it would also have to broadcast the control's state to every worker before each update: that needs Ray and GPU
workers to test, so it is not offered yet.
"""

from __future__ import annotations

from typing import Any

from covgym.adapters.verl_common import PREFIX
from covgym.algorithms.parts import Control

STEP_HOOK = ("needs a step hook (end_of_step) to carry its state (state_dict) from step to step, which verl's "
             "trainer does not call")
ROLLOUT_ENTROPY = ("transforms the advantages from the rollout's token entropies and log-probs, which verl's "
                   "advantage-estimator call does not receive (ray_trainer.compute_advantage passes token_level_rewards, "
                   "response_mask, index, config)")
TOKEN_ENTROPY = ("needs the current policy's token entropy, which verl's policy-loss call does not pass "
                 "(workers/utils/losses.py ppo_loss)")
LOSS_SIDE = "acts in the loss, not on the advantages: register it with register_verl_policy_losses"
#: Controls whose effect verl applies itself, outside the registered loss (the loss leaves them out).
VERL_OWN = {"entropy_bonus": "actor.entropy_coeff"}


def _controls(algorithm_class: type) -> tuple[type[Control], ...]:
    return tuple(getattr(algorithm_class, "control_classes", ()))


def _overrides(control: type[Control], hook: str) -> bool:
    return getattr(control, hook) is not getattr(Control, hook)


def _shared_reasons(control: type[Control]) -> list[str]:
    """Why neither of verl's calls can carry ``control``: state across steps, advantages from the rollout."""
    reasons = []
    if _overrides(control, "state_dict"):
        reasons.append(STEP_HOOK)
    if _overrides(control, "transform_advantages"):
        reasons.append(ROLLOUT_ENTROPY)
    return reasons


def loss_blockers(algorithm_class: type) -> dict[str, str]:
    """Control name → why verl's policy-loss call cannot carry it (empty: the loss works in verl)."""
    blockers = {}
    for control in _controls(algorithm_class):
        reasons = _shared_reasons(control)
        if "token_entropy" in control.needs and control.name not in VERL_OWN:
            reasons.append(TOKEN_ENTROPY)
        if reasons:
            blockers[control.name] = " and ".join(reasons)
    return blockers


def estimator_blockers(algorithm_class: type) -> dict[str, str]:
    """Control name → why verl's advantage-estimator call cannot carry it (empty: the estimator works in verl)."""
    return {control.name: " and ".join(_shared_reasons(control) or [LOSS_SIDE])
            for control in _controls(algorithm_class)}


def _refuse(name: str, blockers: dict[str, Any]) -> None:
    if blockers:
        reasons = "; ".join(f"control {control!r} {reason}" for control, reason in blockers.items())
        raise NotImplementedError(f"{PREFIX}{name}: not supported yet in verl: {reasons}")


def check_policy_loss_support(name: str, algorithm_class: type) -> None:
    """Raise ``NotImplementedError`` (one line naming each control and its reason) if verl's loss call cannot
    carry ``algorithm_class``."""
    _refuse(name, loss_blockers(algorithm_class))


def check_estimator_support(name: str, algorithm_class: type) -> None:
    """Raise ``NotImplementedError`` (one line naming each control and its reason) if verl's estimator call cannot
    carry ``algorithm_class``'s advantages."""
    _refuse(name, estimator_blockers(algorithm_class))
