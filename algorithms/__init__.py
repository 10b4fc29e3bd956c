"""RL algorithms for language models, composed of registered parts: an advantage estimator, a policy loss and
any number of entropy controls.

>>> import covgym.algorithms as algorithms
>>> algorithms.get("kl_cov")(kl_cov_ratio=2e-3).name
'kl_cov'
>>> algorithms.get("rloo+kl_cov")().estimator.name
'rloo'

A name is a preset (``grpo``, ``kl_cov``, ...), a part, or parts joined by ``+``. Built-in parts live one a
module in ``estimators/``, ``losses/`` and ``controls/`` and register themselves; the registry imports every
module of those folders (``registry.load_builtins``), so a new part needs no edit here.
"""

from covgym.algorithms import functional
from covgym.algorithms.base import NEEDS, SHARE_METRICS, Algorithm, AlgorithmCore, hyperparameter
from covgym.algorithms.composition import Composition, compose
from covgym.algorithms.parts import ClipRange, Control, Estimator, Part, PolicyLoss
from covgym.algorithms.registry import (get, hyperparameter_index, load_builtins, names, part, part_names, preset_parts,
                                        register, register_preset, unread_hyperparameters)

load_builtins()

from covgym.algorithms.presets import (GPG, GRPO, PPO, RLOO, ClipCov, ClipHigher, DrGRPO, EntropyBonus,  # noqa: E402
                                       KLCov, ReinforcePP)

#: covgym packages this package may import: algorithms see batches and token statistics, never envs, models or the
#: trainer (checked by tests/test_layout.py).
MAY_IMPORT: tuple[str, ...] = ("covgym.core",)

__all__ = ["GPG", "GRPO", "NEEDS", "PPO", "RLOO", "SHARE_METRICS", "Algorithm", "AlgorithmCore", "ClipCov", "ClipHigher", "ClipRange",
           "Composition", "Control", "DrGRPO", "EntropyBonus", "Estimator", "KLCov", "Part", "PolicyLoss",
           "ReinforcePP", "compose", "functional", "get", "hyperparameter", "hyperparameter_index", "load_builtins",
           "names", "part", "part_names", "preset_parts", "register", "register_preset", "unread_hyperparameters"]
