"""The algorithms the engine-equality check runs: every built-in preset and compositions that cover every part.

Each case is ``(name, hyperparameters, state)``. Hyperparameters make each part act on the check's small batch
(the testbed values of ``covgym.benchmark.mechanism`` where they exist: the paper's selection ratios round down to one token
here); ``state`` switches on what a control only adapts into between steps (adaptive entropy's coefficient). The
critic's preset (``ppo``) is not a case: the TRL engine refuses it (tested separately).
"""

from __future__ import annotations

from typing import Any

import covgym.algorithms as algorithms
from covgym.benchmark.mechanism import MECHANISM_METHODS

Case = tuple[str, dict[str, Any], dict[str, Any] | None]

_PRESET_PARAMETERS = {
    "clip_cov": {k: v for k, v in MECHANISM_METHODS["clip_cov"].items() if k != "algo"},
    "kl_cov": {k: v for k, v in MECHANISM_METHODS["kl_cov"].items() if k != "algo"},
    "entropy_bonus": {"entropy_coeff": 0.05},
}
#: Compositions: the issue's three, then one per part no preset uses.
COMPOSITIONS: list[Case] = [
    ("rloo+kl_cov+entropy_target", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 2.0, "entropy_target_value": 0.55,
                                    "entropy_target_gain_init": 5.0}, None),
    ("dr_grpo+clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0}, None),
    ("grpo+polarity_aware", {"polarity_phase": 1.0}, None),
    ("passk+ppo_clip", {"passk_k": 2}, None),
    ("quantile_baseline+ppo_clip", {}, None),
    ("grpo+cispo", {}, None),
    ("grpo+gspo", {}, None),
    ("grpo+vanilla_pg", {}, None),
    ("grpo+adaptive_entropy", {}, {"adaptive_entropy": {"coefficient": 0.05, "enabled": True}}),
    ("grpo+covariance_kernel", {}, None),
    ("grpo+entrocraft", {"entrocraft_lower_start": 0.0, "entrocraft_upper_start": 0.05}, None),
    ("grpo+entropy_schedule", {"entropy_schedule_start": 0.65, "entropy_schedule_end": 0.35}, None),
    ("grpo+high_entropy_tokens", {"top_entropy_quantile": 0.2}, None),
    ("grpo+ppo_clip+htpo", {"clip_entropy_ratio1": 1.0, "clip_entropy_ratio2": 1.0}, None),
    ("grpo+opefo", {}, None),
    ("grpo", {"use_kl_loss": True, "kl_loss_coef": 0.1}, None),
]


def equality_cases() -> list[Case]:
    """Every preset the TRL engine runs (all but those that need a critic), then ``COMPOSITIONS``."""
    presets = [(name, dict(_PRESET_PARAMETERS.get(name, {})), None) for name in algorithms.names()
               if "critic" not in algorithms.get(name)().needs]
    return presets + COMPOSITIONS


def case_id(case: Case) -> str:
    name, hyperparameters, _ = case
    return name + ("+use_kl_loss" if hyperparameters.get("use_kl_loss") else "")
