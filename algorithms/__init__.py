"""Interchangeable RL algorithms for language models, one module each, behind one registry.

>>> import covgym.algorithms as algorithms
>>> algorithms.get("kl_cov")(kl_cov_ratio=2e-3).name
'kl_cov'
"""

from covgym.algorithms.base import Algorithm, get, hyperparameter, names, register
from covgym.algorithms import functional
from covgym.algorithms.grpo import GRPO
from covgym.algorithms.dr_grpo import DrGRPO
from covgym.algorithms.rloo import RLOO
from covgym.algorithms.reinforce_pp import ReinforcePP
from covgym.algorithms.ppo import PPO
from covgym.algorithms.clip_higher import ClipHigher
from covgym.algorithms.clip_cov import ClipCov
from covgym.algorithms.kl_cov import KLCov
from covgym.algorithms.entropy_bonus import EntropyBonus
from covgym.algorithms.gpg import GPG

__all__ = ["PPO", "RLOO", "Algorithm", "ClipCov", "ClipHigher", "DrGRPO", "EntropyBonus", "GPG", "GRPO", "KLCov",
           "ReinforcePP", "functional", "get", "hyperparameter", "names", "register"]
