"""covgym's multi-turn envs inside TRL: a ``rollout_func`` that plays covgym's own episodes with the TRL model.

TRL 1.16's ``GRPOTrainer(rollout_func=...)`` hands the generation batch's prompts (one per completion: TRL repeats
each prompt ``num_generations`` times) to ``rollout_func(prompts, trainer)``. ``EpisodeRollout`` re-creates each
row's problem from its ``env_seed``, plays the episodes with covgym's ``run_episodes`` (covgym's sampler, stop
strings, grading deadline and turn/token caps; the model is the one TRL trains, so its current weights) and returns:

- ``prompt_ids``: the prompt as covgym encodes it (``Policy.encode_prompt``);
- ``completion_ids``: the whole episode after the prompt, model turns and env replies in order;
- ``logprobs``: the sampler's per-token log-probs (0 on env tokens; None when the sampler withholds them);
- ``env_mask``: 1 on the model's tokens, 0 on env-reply tokens. TRL treats it as ``tool_mask``, and
  ``CovgymGRPOTrainer`` multiplies the loss mask by it, so env tokens get no loss and no gradient;
- ``env_reward``, ``env_correct``, ``env_turns``: per episode, handed by TRL to the reward functions;
  ``EpisodeReward`` returns ``env_reward`` (the env's own episode reward, as covgym's trainer uses it).

Which problem a prompt is: ``CovgymGRPOTrainer`` keeps the ``env_seed`` column of the rows it generates for
(``covgym_env_seeds``), in TRL's order; under a plain ``GRPOTrainer`` a prompt → seed table built from the dataset
is used (prompts that occur under several seeds are the same problem to the model and take the first seed).
Sampling is seeded per step and process as covgym's trainer seeds it (``derive_seed(seed, step, "rollout") +
process index``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym

import covgym.envs  # noqa: F401  (registers the env ids)
from covgym.adapters.common import problem_seeds
from covgym.envs import make_split_env
from covgym.envs.base import SingleTurnEnv
from covgym.models.policy import Policy, SamplingParams
from covgym.train.rollout import Episode, RolloutStats, run_episodes
from covgym.train.trainer import derive_seed


def is_multi_turn(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether ``env_id`` (built with ``env_kwargs``) is not a ``SingleTurnEnv`` (False for an unknown id: the
    single-turn path names the known ones)."""
    if env_id not in gym.registry:
        return False
    env = make_split_env(env_id, dict(env_kwargs or {}), "train", check=False).unwrapped
    return not isinstance(env, SingleTurnEnv)


def episode_rows(env_id: str, num_prompts: int, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None,
                 split: str = "train") -> list[dict[str, Any]]:
    """One ``{"prompt", "answer", "env_seed"}`` row per problem: the env's first observation after
    ``reset(seed=env_seed)``; any env, single- or multi-turn. Seeds as ``prompt_dataset`` draws them."""
    env = make_split_env(env_id, dict(env_kwargs or {}), split, check=False)
    rows = []
    for env_seed in problem_seeds(num_prompts, seed):
        prompt, info = env.reset(seed=int(env_seed))
        rows.append({"prompt": prompt, "answer": str(info.get("answer", "")), "env_seed": int(env_seed)})
    return rows


def episode_dataset(env_id: str, num_prompts: int, seed: int = 0, env_kwargs: Mapping[str, Any] | None = None,
                    split: str = "train"):
    """``episode_rows`` as a ``datasets.Dataset`` for ``GRPOTrainer``."""
    import datasets

    return datasets.Dataset.from_list(episode_rows(env_id, num_prompts, seed, env_kwargs, split))


def episode_output(episodes: Sequence[Episode]) -> dict[str, Any]:
    """TRL's ``rollout_func`` output for covgym episodes (see the module docstring)."""
    completion_ids, env_mask, logprobs = [], [], []
    complete = True
    for episode in episodes:
        ids: list[int] = []
        mask: list[int] = []
        lps: list[float] = []
        scores = episode.scores if len(episode.scores) == len(episode.segments) else [None] * len(episode.segments)
        for (segment, trainable), score in zip(episode.segments, scores):
            ids.extend(segment)
            mask.extend([int(trainable)] * len(segment))
            if trainable and (score is None or len(score[0]) != len(segment)):
                complete = False
            lps.extend(score[0] if trainable and score is not None and len(score[0]) == len(segment)
                       else [0.0] * len(segment))
        completion_ids.append(ids)
        env_mask.append(mask)
        logprobs.append(lps)
    return {"prompt_ids": [list(e.prompt_ids) for e in episodes], "completion_ids": completion_ids,
            "logprobs": logprobs if complete else None, "env_mask": env_mask,
            "env_reward": [float(e.reward) for e in episodes],
            "env_correct": [bool(e.info.get("correct", False)) for e in episodes],
            "env_turns": [sum(1 for _, trainable in e.segments if trainable) for e in episodes]}


class EpisodeRollout:
    """TRL ``rollout_func``: covgym episodes of ``env_id`` sampled by ``policy`` (over the model TRL trains).

    Args:
        env_id, env_kwargs, split: the env and the kwargs the dataset's seeds were drawn under.
        policy: covgym ``Policy`` whose ``model`` is the trainer's model.
        sampling: covgym's sampling parameters (``max_new_tokens`` is per turn, as in covgym).
        seed: the run seed; step ``s`` on process ``p`` samples with ``derive_seed(seed, s, "rollout") + p``.
        max_turns, max_total_tokens, grading_deadline_s: as in covgym's rollout (``run_episodes``).
        prompt_seeds: prompt → env_seed, used when the trainer does not keep the rows' seeds (a plain
            ``GRPOTrainer``); build it with ``prompt_seed_table``.
    """

    def __init__(self, env_id: str, env_kwargs: Mapping[str, Any] | None, policy: Policy, sampling: SamplingParams,
                 seed: int = 0, max_turns: int = 16, max_total_tokens: int | None = None,
                 grading_deadline_s: float | None = None, split: str = "train",
                 prompt_seeds: Mapping[str, int] | None = None) -> None:
        self.env_id, self.env_kwargs, self.split = env_id, dict(env_kwargs or {}), split
        self.policy, self.sampling, self.seed = policy, sampling, seed
        self.max_turns, self.max_total_tokens, self.grading_deadline_s = max_turns, max_total_tokens, grading_deadline_s
        self.prompt_seeds = dict(prompt_seeds or {})
        self.envs: list[gym.Env] = []
        self.last_stats = RolloutStats()
        self.last_output: dict[str, Any] = {}
        self.calls = 0

    def env_seeds(self, prompts: Sequence[Any], trainer: Any) -> list[int]:
        kept = getattr(trainer, "covgym_env_seeds", None)
        if kept is not None and len(kept) == len(prompts) and all(s is not None for s in kept):
            return [int(s) for s in kept]
        missing = [p for p in prompts if not isinstance(p, str) or p not in self.prompt_seeds]
        if missing:
            raise ValueError(f"no env_seed for prompt {missing[0]!r}: train with CovgymGRPOTrainer (it keeps the "
                             "dataset's 'env_seed' column) or pass prompt_seeds built from the dataset")
        return [int(self.prompt_seeds[p]) for p in prompts]

    def sampling_seed(self, trainer: Any) -> int:
        step = getattr(trainer, "covgym_step", None)
        if step is None:  # a plain GRPOTrainer: the optimizer step's generation cycle
            step = self.calls + 1
        process = getattr(getattr(trainer, "accelerator", None), "process_index", 0)
        return derive_seed(self.seed, int(step), "rollout") + int(process)

    def _envs(self, count: int) -> list[gym.Env]:
        while len(self.envs) < count:
            self.envs.append(make_split_env(self.env_id, self.env_kwargs, self.split, check=not self.envs))
        return self.envs[:count]

    def play(self, env_seeds: Sequence[int], seed: int) -> list[Episode]:
        """covgym's episodes for ``env_seeds`` (model in eval mode while sampling, as covgym's trainer samples)."""
        model = self.policy.model
        was_training = model.training
        model.eval()
        self.last_stats = RolloutStats()
        try:
            return run_episodes(self.policy, self._envs(len(env_seeds)), list(env_seeds), self.sampling, seed,
                                max_turns=self.max_turns, max_total_tokens=self.max_total_tokens,
                                stats=self.last_stats, grading_deadline_s=self.grading_deadline_s)
        finally:
            model.train(was_training)

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, Any]:
        seeds = self.env_seeds(prompts, trainer)
        episodes = self.play(seeds, self.sampling_seed(trainer))
        self.calls += 1
        encoded: dict[str, list[int]] = {}
        for prompt, episode in zip(prompts, episodes):
            if isinstance(prompt, str) and encoded.setdefault(prompt, self.policy.encode_prompt(prompt)) != \
                    episode.prompt_ids:
                raise ValueError(f"env_seed does not re-create the prompt {prompt!r} under {self.env_id} "
                                 f"{self.env_kwargs}: build the dataset and the rollout with the same env kwargs")
        self.last_output = episode_output(episodes)
        return self.last_output


def prompt_seed_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """prompt → env_seed of a dataset's rows (the first seed of a prompt that occurs more than once)."""
    table: dict[str, int] = {}
    for row in rows:
        table.setdefault(row["prompt"], int(row["env_seed"]))
    return table


class EpisodeReward:
    """TRL reward function returning the env's episode reward that ``EpisodeRollout`` put in ``env_reward``; keeps
    ``last_info`` (whether each episode ended correct) for ``CovgymGRPOTrainer``'s accuracy."""

    def __init__(self, env_id: str) -> None:
        self.__name__ = "covgym_" + env_id.split("/")[-1].split("-v")[0].lower()
        self.last_info: list[dict[str, Any]] = []

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], env_reward: Sequence[float] | None = None,
                 env_correct: Sequence[bool] | None = None, **unused: Any) -> list[float]:
        if env_reward is None or len(env_reward) != len(completions):
            raise ValueError("EpisodeReward needs one 'env_reward' per completion (from EpisodeRollout)")
        correct = env_correct if env_correct is not None else [False] * len(completions)
        self.last_info = [{"correct": bool(c)} for c in correct]
        return [float(r) for r in env_reward]


__all__ = ["EpisodeReward", "EpisodeRollout", "episode_dataset", "episode_output", "episode_rows", "is_multi_turn",
           "prompt_seed_table"]
