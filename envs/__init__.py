"""Gymnasium environments with verifiable rewards, registered as ``covgym/<Name>-v0``.

Importing ``covgym`` registers them; then ``gymnasium.make("covgym/Arithmetic-v0")``.
"""

from __future__ import annotations

import gymnasium as gym

from covgym.envs.base import Problem, SingleTurnEnv, text_space
from covgym.envs.grading import Grade, grade_math

#: id -> (entry point, one-line description). Add an environment: one module, one line here.
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "covgym/Arithmetic-v0": ("covgym.envs.arithmetic:ArithmeticEnv", "integer arithmetic (+, -, *), digits/terms knobs"),
}


def register_all() -> None:
    for env_id, (entry_point, _) in ENVIRONMENTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


def describe() -> dict[str, str]:
    """Registered covgym env ids and their one-line descriptions."""
    return {env_id: description for env_id, (_, description) in sorted(ENVIRONMENTS.items())}


register_all()

__all__ = ["ENVIRONMENTS", "Grade", "Problem", "SingleTurnEnv", "describe", "grade_math", "register_all",
           "text_space"]
