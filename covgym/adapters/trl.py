"""Any covgym single-turn env inside TRL's ``GRPOTrainer``: a prompt dataset and a reward function.

>>> from covgym.adapters.trl import prompt_dataset, reward_function
>>> from trl import GRPOConfig, GRPOTrainer
>>> trainer = GRPOTrainer(model="path/to/model", reward_funcs=reward_function("covgym/Arithmetic-v0"),
...                       train_dataset=prompt_dataset("covgym/Arithmetic-v0", num_prompts=512),
...                       args=GRPOConfig(output_dir="out", num_generations=8))

The dataset has a ``prompt`` column (plain text, or a one-message conversation with ``conversational=True``)
plus ``answer`` and ``env_seed``; TRL hands those extra columns to the reward function, which re-creates each
problem from its seed and grades with the env's own reward rule. Build both with the same ``env_kwargs`` and
``split``. TRL is an optional extra: ``pip install 'covgym[trl]'``.

Any covgym algorithm inside TRL (``covgym train --engine trl``, or in Python):

>>> from covgym.adapters.trl import CovgymGRPOTrainer, train_with_trl

``CovgymGRPOTrainer`` (``covgym.adapters.trl_trainer``) is a ``GRPOTrainer`` whose advantages, per-token loss, step
hook, checkpointed state and logged metrics are the covgym algorithm's; ``train_with_trl``
(``covgym.adapters.trl_run``) runs a covgym ``TrainConfig`` through it into covgym's run directory. What works: every
estimator, loss and control that needs no critic, a reference model (``use_kl_loss``), single-turn envs, data
parallel ``accelerate launch``, multi-turn envs (``covgym.adapters.trl_multiturn``: covgym's episodes as TRL's
``rollout_func``, env replies masked out of the loss). Not yet: PPO/GAE (critic). docs/scaling.md has the table.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Sequence

from covgym.adapters.common import EnvGrader, completion_text, make_single_turn_env, problem_seeds, prompt_rows

INSTALL_HINT = "pip install 'covgym[trl]'  (or: pip install trl datasets)"


def require(module: str) -> Any:
    """Import an optional dependency of this adapter, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"covgym.adapters.trl needs the optional package {module!r} ({error}); install it with: "
                          f"{INSTALL_HINT}") from None


def prompt_dataset(env_id: str = "covgym/Arithmetic-v0", num_prompts: int = 256, seed: int = 0,
                   env_kwargs: Mapping[str, Any] | None = None, split: str = "train", conversational: bool = False):
    """A ``datasets.Dataset`` of ``num_prompts`` problems of ``env_id`` for ``GRPOTrainer``.

    Columns: ``prompt`` (``str``, or ``[{"role": "user", "content": str}]`` when ``conversational``), ``answer``
    (the gold answer, ``str``) and ``env_seed`` (``int``: the seed that re-creates the problem). The same
    ``(env_id, env_kwargs, split, seed)`` always gives the same dataset.
    """
    datasets = require("datasets")
    env = make_single_turn_env(env_id, {**dict(env_kwargs or {}), "split": split})
    rows = prompt_rows(env, problem_seeds(num_prompts, seed))
    if conversational:
        rows = [{**row, "prompt": [{"role": "user", "content": row["prompt"]}]} for row in rows]
    return datasets.Dataset.from_list(rows)


class EnvReward:
    """A TRL reward function grading with one covgym env: ``reward(prompts, completions, **columns) -> list[float]``.

    Uses the ``env_seed`` column when present (the problem is re-created, so graders that need more than the
    answer work), else the ``answer`` column. Completions may be plain text or conversations (the assistant
    turns are graded). A picklable callable; ``__name__`` names it in TRL's logs (``rewards/<name>/mean``).
    """

    def __init__(self, env_id: str = "covgym/Arithmetic-v0", env_kwargs: Mapping[str, Any] | None = None,
                 split: str = "train") -> None:
        self.grader = EnvGrader(env_id, {**dict(env_kwargs or {}), "split": split})
        self.__name__ = "covgym_" + env_id.split("/")[-1].split("-v")[0].lower()

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], env_seed: Sequence[int] | None = None,
                 answer: Sequence[str] | None = None, **unused: Any) -> list[float]:
        count = len(completions)
        for name, column in (("env_seed", env_seed), ("answer", answer)):
            if column is not None and len(column) != count:
                raise ValueError(f"column {name!r} has {len(column)} entries for {count} completions")
        if env_seed is None and answer is None:
            raise ValueError("the dataset needs an 'env_seed' or an 'answer' column (see prompt_dataset)")
        return [self.grader.reward(completion_text(completions[i]),
                                   env_seed=None if env_seed is None else env_seed[i],
                                   answer=None if answer is None else answer[i])
                for i in range(count)]


def reward_function(env_id: str = "covgym/Arithmetic-v0", env_kwargs: Mapping[str, Any] | None = None,
                    split: str = "train") -> EnvReward:
    """The reward function for prompts made by ``prompt_dataset`` with the same arguments."""
    return EnvReward(env_id, env_kwargs, split)


__all__ = ["INSTALL_HINT", "CovgymGRPOTrainer", "EnvReward", "SUPPORTED_TRL", "grpo_config", "prompt_dataset",
           "require", "reward_function", "train_with_trl"]


_ENGINE = {"CovgymGRPOTrainer": "covgym.adapters.trl_trainer", "SUPPORTED_TRL": "covgym.adapters.trl_trainer",
           "train_with_trl": "covgym.adapters.trl_run", "grpo_config": "covgym.adapters.trl_run"}


def __getattr__(name: str) -> Any:
    """The engine (``CovgymGRPOTrainer``, ``train_with_trl``) loads TRL, so it is imported on first use only."""
    if name in _ENGINE:
        require("trl")
        return getattr(importlib.import_module(_ENGINE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
