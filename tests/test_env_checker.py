"""Every registered covgym env passes Gymnasium's own checker with no warnings, and the passive checker is on."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.common import PassiveEnvChecker

from covgym.envs import ENVIRONMENTS


@pytest.mark.parametrize("env_id", sorted(ENVIRONMENTS))
def test_check_env_passes_without_warnings(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", sorted(ENVIRONMENTS))
def test_gymnasium_make_keeps_the_passive_checker_on(env_id):
    env = gym.make(env_id)
    wrappers = []
    while isinstance(env, gym.Wrapper):
        wrappers.append(type(env))
        env = env.env
    assert PassiveEnvChecker in wrappers
    assert gym.spec(env_id).disable_env_checker is False
