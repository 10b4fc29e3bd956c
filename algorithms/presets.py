"""Preset compositions: the names ``--algo`` has always accepted, each a composition of parts.

A preset is parts plus default overrides; its hyperparameters are its parts'. The classes are exported under the
names older code used (``GRPO``, ``KLCov``, ...), so ``@dataclass class Mine(GRPO)`` keeps working.
"""

from __future__ import annotations

from covgym.algorithms.registry import register_preset

GRPO = register_preset(
    "grpo", ("grpo", "ppo_clip"), class_name="GRPO",
    description="Group-relative advantages (mean/std over a prompt's responses) + PPO-clip",
    source="Shao et al. 2024 (DeepSeekMath); verl compute_grpo_outcome_advantage")
DrGRPO = register_preset(
    "dr_grpo", ("dr_grpo", "ppo_clip"), {"loss_agg_mode": "seq-mean-token-sum-norm"}, class_name="DrGRPO",
    description="GRPO without std normalisation and with a constant length normaliser",
    source="Liu et al. 2025 (Understanding R1-Zero-Like Training); verl docs Dr. GRPO recipe")
RLOO = register_preset(
    "rloo", ("rloo", "ppo_clip"), class_name="RLOO",
    description="Leave-one-out group baseline (no std normalisation) + PPO-clip",
    source="Ahmadian et al. 2024 (Back to Basics); verl compute_rloo_outcome_advantage")
ReinforcePP = register_preset(
    "reinforce_pp", ("reinforce_pp", "ppo_clip"), class_name="ReinforcePP",
    description="Group-mean baseline, then batch-wide whitening (REINFORCE++-baseline) + PPO-clip",
    source="Hu et al. 2025 (REINFORCE++); verl compute_reinforce_plus_plus_baseline_outcome_advantage")
PPO = register_preset(
    "ppo", ("gae", "ppo_clip"), class_name="PPO",
    description="PPO with a critic: GAE advantages, PPO-clip, clipped value loss",
    source="Schulman et al. 2017; verl compute_gae_advantage_return / compute_value_loss")
ClipHigher = register_preset(
    "clip_higher", ("grpo", "ppo_clip"), {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28}, class_name="ClipHigher",
    description="GRPO with asymmetric clipping ε_low=0.2, ε_high=0.28 (DAPO clip-higher)",
    source="Yu et al. 2025 (DAPO); verl clip_ratio_low/clip_ratio_high")
ClipCov = register_preset(
    "clip_cov", ("grpo", "clip_cov"), class_name="ClipCov",
    description="GRPO + Clip-Cov: detach a random r-fraction of high-covariance tokens",
    source="Cui et al. 2025 (arXiv 2505.22617); verl compute_policy_loss_clip_cov")
KLCov = register_preset(
    "kl_cov", ("grpo", "kl_cov"), class_name="KLCov",
    description="GRPO + KL-Cov: |log-ratio| penalty on the top-k covariance tokens",
    source="Cui et al. 2025 (arXiv 2505.22617); verl compute_policy_loss_kl_cov")
EntropyBonus = register_preset(
    "entropy_bonus", ("grpo", "ppo_clip", "entropy_bonus"), class_name="EntropyBonus",
    description="GRPO + entropy bonus (entropy_coeff=0.005)", source="Cui et al. 2025 §4.1; verl actor entropy_coeff")
GPG = register_preset(
    "gpg", ("gpg", "vanilla_pg"), class_name="GPG",
    description="Group policy gradient: α-rescaled group baseline, plain −A·log π loss",
    source="Chu et al. 2025 (GPG); verl compute_gpg_outcome_advantage / compute_policy_loss_gpg")
