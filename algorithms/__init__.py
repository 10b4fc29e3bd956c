"""Interchangeable RL algorithms for language models, one module each, behind one registry.

>>> import covgym.algorithms as algorithms
>>> algorithms.get("grpo")(clip_ratio=0.2)
"""

from covgym.algorithms.base import Algorithm, get, hyperparameter, names, register
from covgym.algorithms import functional
from covgym.algorithms.grpo import GRPO

__all__ = ["Algorithm", "GRPO", "functional", "get", "hyperparameter", "names", "register"]
