"""covgym inside verl: its policy losses and advantage estimators in verl's registries, its graders as a reward.

Losses and estimators (register in every verl process; ``actor_rollout_ref.model.external_lib=
covgym.adapters.verl_plugin`` does it for you, in the workers and in the v1 trainer that computes advantages)::

    from covgym.adapters.verl import register_verl_advantage_estimators, register_verl_policy_losses
    register_verl_policy_losses()          # -> ["covgym_clip_cov", "covgym_grpo", "covgym_kl_cov", ...]
    register_verl_policy_losses(["grpo+clip_cov+covariance_kernel"])   # a composition, as one verl loss
    register_verl_advantage_estimators()   # -> ["covgym_dr_grpo", "covgym_gae", ..., "covgym_passk", ...]
    # then: actor_rollout_ref.actor.policy_loss.loss_mode=covgym_kl_cov  algorithm.adv_estimator=covgym_rloo

Rewards and data::

    write_verl_dataset("train.parquet", "covgym/Arithmetic-v0", num_prompts=4096)
    # custom_reward_function.path=<path of this file> custom_reward_function.name=compute_score

Targets verl's policy-loss interface as on its main branch for the v0.9 series (``verl.trainer.ppo.core_algos``:
``register_policy_loss(name)`` / ``get_policy_loss_fn(name)``; a loss is called with keywords ``old_log_prob,
log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights`` and returns
``(pg_loss, metrics: dict)``; global normalisers arrive in ``config.global_batch_info``). Older releases whose
losses return ``(pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower)`` are detected and served that form.
verl is not a dependency of covgym: install it separately.

How a covgym loss maps onto verl's call:

- Hyperparameters: ``hyperparameters[covgym_name]`` (given at registration) win; else verl's
  ``config.policy_loss.<field>``, then ``config.<field>`` (``clip_ratio``, ``clip_ratio_low/high/c``,
  ``clip_cov_ratio``, ``kl_cov_ratio``, ``ppo_kl_coef``, ...); else covgym's default. verl's YAML sets
  ``ppo_kl_coef = 0.1`` where covgym (and the paper) use 1.0: set it explicitly.
- ``loss_agg_mode`` is verl's ``actor.loss_agg_mode`` (the call argument), so ``covgym_dr_grpo`` needs
  ``actor.loss_agg_mode=seq-mean-token-sum-norm`` there (and verl's ``norm_adv_by_std_in_grpo=False``), unless
  ``hyperparameters={"dr_grpo": {"loss_agg_mode": ...}}`` fixes it at registration. Advantages are verl's.
- The entropy bonus and the KL-to-reference term are verl's own (``actor.entropy_coeff``, ``use_kl_loss``): the
  registered losses compute the policy-gradient term only (so ``covgym_entropy_bonus`` equals ``covgym_grpo``
  there; use ``actor.entropy_coeff``).
- Normalisation follows verl 0.9.1's ``agg_loss``: with ``dp_size`` ranks and global ``batch_num_tokens`` /
  ``global_batch_size``, the loss is ``Σ/global_count · dp_size`` (verl averages gradients over ranks), and
  ``seq-mean-token-sum-norm`` (Dr. GRPO) is ``seq-mean-token-sum / loss_scale_factor``: the *mean* over
  sequences of each sequence's token sum, divided by the constant. Without the global counts the local ones are
  used, and ``dp_size > 1`` without them is an error, as in verl.
- Clip-Cov's and KL-Cov's token choice is made per call (one micro-batch on one rank), as verl's own versions do:
  covgym's cross-rank reductions are switched off inside verl, whose ranks need not call the loss equally often.
- ``rollout_is_weights`` (verl's rollout importance-sampling correction) is not supported: a clear error.
- A composition's controls act inside the call through ``token_weights`` and ``loss_terms``
  (``covariance_kernel``); ``entropy_bonus`` is verl's ``actor.entropy_coeff``. Controls that keep state between
  steps (``end_of_step``: ``adaptive_entropy``, ``entropy_target``, ``entropy_schedule``, ``entrocraft``,
  ``polarity_aware``), need the token entropy in the loss (``high_entropy_tokens``) or transform advantages from
  the rollout's entropies (``opefo``, ``htpo``) are refused at registration with a one-line
  ``NotImplementedError`` ("not supported yet in verl: control ... needs a step hook (end_of_step) ...");
  ``covgym.adapters.verl_support`` says why for each.

Estimators: ``covgym.adapters.verl_estimators`` (verl's ``compute_advantage`` call, groups from its ``index``).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

import covgym.algorithms as algorithms
from covgym.adapters.common import EnvGrader, make_single_turn_env, problem_seeds, prompt_rows
from covgym.adapters.verl_common import (CORE_ALGOS, INSTALL_HINT, MISSING, PREFIX, core_algos, from_config, lookup,
                                         process_rank, rank_local_selection)
from covgym.adapters.verl_estimators import register_verl_advantage_estimators, verl_advantage_estimator
from covgym.adapters.verl_support import check_policy_loss_support

#: Hyperparameters verl applies outside the policy loss (or passes as call arguments): never read from its config.
_NOT_FROM_CONFIG = frozenset({"entropy_coeff", "use_kl_loss", "kl_loss_coef", "kl_loss_type", "loss_agg_mode",
                              "loss_scale_factor"})


# ---------------------------------------------------------------------------------------------- policy losses
def verl_policy_loss(name: str, hyperparameters: Mapping[str, Any] | None = None, seed: int = 0,
                     return_form: str = "dict") -> Callable[..., Any]:
    """covgym's ``name`` loss as a function of verl's policy-loss signature (usable without verl installed).

    Args:
        name: a covgym algorithm name (``covgym.algorithms.names()``) or parts joined by ``+``
            (``grpo+clip_cov+covariance_kernel``): the loss part and the controls' token weights and loss terms
            act inside verl's call; the estimator part does not (advantages are verl's ``algorithm.adv_estimator``).
        hyperparameters: fixed hyperparameters of the algorithm; they override verl's config.
        seed: seeds the generator of random token choices (Clip-Cov), offset by the process rank.
        return_form: ``"dict"`` → ``(pg_loss, metrics)``; ``"tuple"`` → ``(pg_loss, pg_clipfrac, ppo_kl,
            pg_clipfrac_lower)`` (verl releases before the dict form).
    Raises:
        NotImplementedError: a control of ``name`` needs what verl's loss call cannot give (a step hook, the
            token entropy, advantages transformed on the driver); the message names the control and the reason.
    """
    algorithm_class = algorithms.get(name)
    check_policy_loss_support(name, algorithm_class)
    if return_form not in ("dict", "tuple"):
        raise ValueError(f"return_form must be 'dict' or 'tuple', got {return_form!r}")
    fixed = dict(hyperparameters or {})
    known = {field.name for field in algorithm_class.hyperparameters()}
    unknown = sorted(set(fixed) - known)
    if unknown:
        raise ValueError(f"hyperparameters for {name!r}: unknown field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    instances: dict[tuple, algorithms.Algorithm] = {}

    def instance(kwargs: dict[str, Any]) -> algorithms.Algorithm:
        key = tuple(sorted(kwargs.items()))
        if key not in instances:  # kept, so Clip-Cov's generator advances from call to call
            algorithm = algorithm_class(**kwargs)
            algorithm.set_generator(torch.Generator().manual_seed(seed + process_rank()))
            instances[key] = algorithm
        return instances[key]

    def policy_loss(old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor,
                    loss_agg_mode: str = "token-mean", config: Any = None, rollout_is_weights: Tensor | None = None,
                    **unused: Any) -> tuple[Tensor, ...] | tuple[Tensor, dict[str, float]]:
        """covgym's loss under verl's calling convention; all tensors ``[B, T]``."""
        if rollout_is_weights is not None:
            raise ValueError(f"{PREFIX}{name}: rollout_is_weights (verl's rollout importance-sampling correction) "
                             "is not supported by covgym's losses; turn the rollout correction off")
        batch_info = lookup(config, "global_batch_info")
        batch_info = batch_info if isinstance(batch_info, Mapping) else {}
        scale_factor = batch_info.get("loss_scale_factor", lookup(config, "loss_scale_factor"))
        loss_agg_mode = fixed.get("loss_agg_mode", loss_agg_mode)
        kwargs = {**from_config([lookup(config, "policy_loss"), config], known - _NOT_FROM_CONFIG), **fixed, "loss_agg_mode": loss_agg_mode,
                  "use_kl_loss": False}
        if "entropy_coeff" in known:  # verl adds its own entropy term; only some algorithms have this knob
            kwargs["entropy_coeff"] = 0.0
        if "loss_scale_factor" not in fixed and scale_factor not in (None, MISSING):
            kwargs["loss_scale_factor"] = float(scale_factor)
        dp_size = float(batch_info.get("dp_size") or 1)
        tokens, sequences = batch_info.get("batch_num_tokens"), batch_info.get("global_batch_size")
        needed = "batch_num_tokens" if loss_agg_mode == "token-mean" else "global_batch_size"
        if dp_size > 1 and batch_info.get(needed) is None:  # local counts would scale the loss by dp_size wrongly
            raise ValueError(f"{PREFIX}{name}: config.global_batch_info has dp_size {dp_size:g} but no {needed}; "
                             f"verl's agg_loss needs the global count there too")
        with rank_local_selection():
            loss, metrics = instance(kwargs).policy_loss(
                log_prob, old_log_prob, advantages, response_mask,
                global_token_count=None if tokens is None else float(tokens),
                global_seq_count=None if sequences is None else float(sequences))
        loss = loss * dp_size
        if return_form == "tuple":
            device = loss.device
            return (loss, torch.tensor(metrics["clip_frac"], device=device),
                    torch.tensor(metrics["approx_kl"], device=device),
                    torch.tensor(metrics["clip_frac_lower"], device=device))
        return loss, _verl_metrics(metrics)

    policy_loss.__name__ = f"{PREFIX}{name}"
    policy_loss.__qualname__ = policy_loss.__name__
    return policy_loss


def register_verl_policy_losses(names: list[str] | None = None, prefix: str = PREFIX,
                                hyperparameters: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                                return_form: str = "auto") -> list[str]:
    """Register covgym's losses (default: every registered algorithm) in verl as ``<prefix><name>``.

    Args:
        names: covgym algorithm names or ``+``-joined compositions to register (default:
            ``covgym.algorithms.names()``, covgym-only ones too), e.g. ``["grpo+clip_cov+covariance_kernel"]``.
        prefix: prepended to each name in verl's registry (so covgym's ``clip_cov`` never replaces verl's).
        hyperparameters: per covgym name, fixed hyperparameters that override verl's config.
        seed: seed of Clip-Cov's token-choice generator (offset by the rank).
        return_form: ``"auto"`` (read off verl's vanilla loss), ``"dict"`` or ``"tuple"``.
    Returns:
        The names registered in verl, sorted.
    Raises:
        ImportError: verl is not importable (the message says how to install it).
        NotImplementedError: a name has a control verl's calls cannot carry (``covgym.adapters.verl_support``);
            nothing is registered then.
    """
    registry = core_algos()
    chosen = algorithms.names() if names is None else list(names)
    overrides = dict(hyperparameters or {})
    unknown = sorted(set(overrides) - set(chosen))
    if unknown:
        raise ValueError(f"hyperparameters given for algorithm(s) not being registered: {', '.join(unknown)}")
    form = _detect_return_form(registry) if return_form == "auto" else return_form
    # every function is built (and checked) before any is registered: a refused name leaves verl's registry as it was
    functions = {prefix + name: verl_policy_loss(name, overrides.get(name), seed=seed, return_form=form)
                 for name in chosen}
    for registered_name, function in functions.items():
        registry.register_policy_loss(registered_name)(function)
    return sorted(functions)


def _detect_return_form(core_algos: Any) -> str:
    """``"tuple"`` when verl's own vanilla loss is annotated to return four tensors, else ``"dict"``."""
    vanilla = getattr(core_algos, "compute_policy_loss_vanilla", None)
    if vanilla is None:
        return "dict"
    annotation = str(inspect.signature(vanilla).return_annotation)
    return "tuple" if annotation.count("Tensor") >= 4 and "dict" not in annotation.lower() else "dict"


def _verl_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """verl's metric names for what it knows, ``actor/covgym/<name>`` for covgym's own statistics."""
    renamed = {"actor/pg_clipfrac": metrics["clip_frac"], "actor/ppo_kl": metrics["approx_kl"],
               "actor/pg_clipfrac_lower": metrics["clip_frac_lower"]}
    for key, value in metrics.items():
        if key not in ("clip_frac", "approx_kl", "clip_frac_lower", "pg_loss", "loss"):
            renamed[f"actor/covgym/{key}"] = value
    return renamed


# ---------------------------------------------------------------------------------------------- rewards and data
_GRADERS: dict[tuple[str, str], EnvGrader] = {}


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: Mapping[str, Any] | None = None,
                  **unused: Any) -> float:
    """A verl custom reward function grading with a covgym env.

    ``data_source`` is the env id (``covgym/Arithmetic-v0``); ``extra_info`` (as written by
    ``write_verl_dataset``) carries ``env_kwargs`` (a JSON object string) and ``env_seed``, so the problem is
    re-created and graded with the env's own reward rule. Without ``env_seed``, ``ground_truth`` is graded against
    with the env's grader.

    Raises:
        ValueError: ``data_source`` is not a registered covgym single-turn env.
    """
    extra_info = extra_info or {}
    kwargs_text = extra_info.get("env_kwargs") or "{}"
    key = (data_source, kwargs_text if isinstance(kwargs_text, str) else json.dumps(kwargs_text, sort_keys=True))
    if key not in _GRADERS:
        env_kwargs = json.loads(kwargs_text) if isinstance(kwargs_text, str) else dict(kwargs_text)
        _GRADERS[key] = EnvGrader(data_source, env_kwargs)
    env_seed = extra_info.get("env_seed")
    return _GRADERS[key].reward(solution_str, env_seed=None if env_seed is None else int(env_seed),
                                answer=None if ground_truth is None else str(ground_truth))


def verl_rows(env_id: str = "covgym/Arithmetic-v0", num_prompts: int = 256, seed: int = 0,
              env_kwargs: Mapping[str, Any] | None = None, split: str = "train", chat: bool = True
              ) -> list[dict[str, Any]]:
    """Rows in verl's RL dataset layout, graded by ``compute_score``.

    Each row: ``data_source`` (the env id), ``prompt`` (a one-message chat ``[{"role": "user", "content": ...}]``,
    or the plain text when ``chat=False``), ``ability`` (``"math"``), ``reward_model`` (``{"style": "rule",
    "ground_truth": answer}``) and ``extra_info`` (``{"split", "index", "env_seed", "env_kwargs"}``, the kwargs as
    a JSON string so the parquet schema stays flat).
    """
    kwargs = {**dict(env_kwargs or {}), "split": split}
    env = make_single_turn_env(env_id, kwargs)
    kwargs_text = json.dumps(kwargs, sort_keys=True)
    rows = []
    for index, row in enumerate(prompt_rows(env, problem_seeds(num_prompts, seed))):
        rows.append({"data_source": env_id,
                     "prompt": [{"role": "user", "content": row["prompt"]}] if chat else row["prompt"],
                     "ability": "math",
                     "reward_model": {"style": "rule", "ground_truth": row["answer"]},
                     "extra_info": {"split": split, "index": index, "env_seed": row["env_seed"],
                                    "env_kwargs": kwargs_text}})
    return rows


def write_verl_dataset(path: str | Path, env_id: str = "covgym/Arithmetic-v0", num_prompts: int = 256,
                       seed: int = 0, env_kwargs: Mapping[str, Any] | None = None, split: str = "train",
                       chat: bool = True) -> Path:
    """Write ``verl_rows(...)`` to ``path``: Parquet for ``*.parquet`` (needs pandas + pyarrow), else JSON lines."""
    path = Path(path)
    rows = verl_rows(env_id, num_prompts, seed, env_kwargs, split, chat)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        try:
            import pandas
        except ImportError:
            raise ImportError("writing Parquet needs pandas and pyarrow (pip install pandas pyarrow); "
                              "or give a .jsonl path") from None
        pandas.DataFrame(rows).to_parquet(path, index=False)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


__all__ = ["CORE_ALGOS", "INSTALL_HINT", "PREFIX", "compute_score", "register_verl_advantage_estimators",
           "register_verl_policy_losses", "verl_advantage_estimator", "verl_policy_loss", "verl_rows",
           "write_verl_dataset"]
