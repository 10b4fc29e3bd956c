"""Rollout: run a policy against a pool of text environments and pack the episodes into a ``RolloutBatch``.

A single-turn episode is ``prompt → response``. A multi-turn episode alternates policy turns and environment
observations (tool output, game feedback) until the env terminates or truncates; it becomes one token sequence
in which the environment's tokens have response mask 0, so only the policy's own tokens are trained on.
All members of a group are reset with the same seed, so they start from the same problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import gymnasium as gym
import torch

from covgym.core.batch import RolloutBatch
from covgym.distributed import parallel
from covgym.models.policy import Policy, SamplingParams
from covgym.train.stepping import settle, step_envs

DEFAULT_MAX_TURNS = 16


@dataclass
class Episode:
    """One episode as token segments; ``trainable`` marks the policy's own segments."""

    prompt_ids: list[int]
    segments: list[tuple[list[int], bool]] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    #: per segment: the policy's (log-probs, entropies) read off while sampling it, else None
    scores: list[tuple[list[float], list[float]] | None] = field(default_factory=list)

    def context(self) -> list[int]:
        ids = list(self.prompt_ids)
        for segment, _ in self.segments:
            ids.extend(segment)
        return ids

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + sum(len(s) for s, _ in self.segments)


@dataclass
class RolloutStats:
    time_generate_s: float = 0.0
    time_env_s: float = 0.0
    time_score_s: float = 0.0
    turns: int = 0
    grading_timeouts: int = 0


def run_episodes(policy: Policy, envs: Sequence[gym.Env], env_seeds: Sequence[int], sampling: SamplingParams,
                 seed: int, max_turns: int = DEFAULT_MAX_TURNS, max_total_tokens: int | None = None,
                 stats: RolloutStats | None = None, grading_deadline_s: float | None = None) -> list[Episode]:
    """Play one episode in each env (reset with its seed); returns the episodes as token segments.

    ``grading_deadline_s`` bounds the time all ``env.step`` calls of the episodes take together; the envs of a
    turn then step in parallel, and a response not graded in time scores 0 and ends its episode with
    ``info["grading_timeout"]`` set (``covgym.train.stepping``). None or 0: no deadline, envs step one after another.
    """
    stats = stats or RolloutStats()
    if len(envs) != len(env_seeds):
        raise ValueError(f"got {len(envs)} envs but {len(env_seeds)} seeds")
    stop_strings = tuple(getattr(envs[0].unwrapped, "stop_strings", ()) or ())
    episodes: list[Episode] = []
    started = time.perf_counter()
    encoded: dict[str, list[int]] = {}  # a group's envs show the same prompt: tokenise it once
    for env, env_seed in zip(envs, env_seeds):
        settle(env)
        observation, info = env.reset(seed=int(env_seed))
        if isinstance(observation, str):
            if observation not in encoded:
                encoded[observation] = policy.encode_prompt(observation)
            prompt_ids = list(encoded[observation])
        else:
            prompt_ids = policy.encode_prompt(observation)
        episodes.append(Episode(prompt_ids=prompt_ids, info=dict(info)))
    stats.time_env_s += time.perf_counter() - started
    grading_left = grading_deadline_s or None

    for turn in range(max_turns):
        active = [i for i, episode in enumerate(episodes) if not episode.done]
        if not (parallel.any_rank(bool(active)) if getattr(policy, "synced", False) else active):
            break
        stats.turns = turn + 1
        started = time.perf_counter()
        contexts, turn_seed = [episodes[i].context() for i in active], seed * 1009 + turn
        if hasattr(policy, "sample"):  # a covgym Policy: token ids with their log-probs and entropies
            sampled = policy.sample(contexts, sampling, stop_strings, seed=turn_seed)
            responses = [s.ids for s in sampled]
            scores = [None if s.log_probs is None else (s.log_probs, s.entropies) for s in sampled]
        else:  # any object with generate(): ids only, scored afterwards
            responses = policy.generate(contexts, sampling, stop_strings, seed=turn_seed)
            scores = [None] * len(responses)
        stats.time_generate_s += time.perf_counter() - started
        started = time.perf_counter()
        texts = [policy.decode(response_ids) for response_ids in responses]
        deadline_at = None if grading_left is None else time.monotonic() + max(grading_left, 0.0)
        results = step_envs([envs[index] for index in active], texts, deadline_at)
        if grading_left is not None:
            grading_left -= time.perf_counter() - started
        for index, response_ids, text, result, score in zip(active, responses, texts, results, scores):
            episode = episodes[index]
            episode.segments.append((response_ids, True))
            episode.scores.append(score)
            episode.texts.append(text)
            observation, terminated, truncated = result.observation, result.terminated, result.truncated
            episode.reward += float(result.reward)
            episode.info.update(result.info)
            if result.timed_out:
                stats.grading_timeouts += 1
                terminated, truncated = False, True  # not graded in time: the episode ends here, scored 0
            too_long = max_total_tokens is not None and episode.length >= max_total_tokens
            if terminated or truncated or too_long or turn == max_turns - 1:
                episode.done = True
                episode.info.setdefault("truncated", bool(truncated or too_long or not terminated))
            elif observation:
                episode.segments.append((policy.encode_observation(observation), False))
                episode.scores.append(None)
                episode.texts.append(observation)
        stats.time_env_s += time.perf_counter() - started
    return episodes


def pack_episodes(episodes: Sequence[Episode], group_ids: Sequence[int], pad_token_id: int) -> RolloutBatch:
    """Right-padded ``[prompt | turns | pad]`` tensors; log-probs and entropies are left at 0 (see ``score``)."""
    width = max(max(e.length for e in episodes), 2)
    b = len(episodes)
    input_ids = torch.full((b, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    response_mask = torch.zeros((b, width), dtype=torch.float32)
    for row, episode in enumerate(episodes):
        position = len(episode.prompt_ids)
        input_ids[row, :position] = torch.tensor(episode.prompt_ids, dtype=torch.long)
        for segment, trainable in episode.segments:
            if segment:
                input_ids[row, position:position + len(segment)] = torch.tensor(segment, dtype=torch.long)
                response_mask[row, position:position + len(segment)] = float(trainable)
            position += len(segment)
        attention_mask[row, :position] = 1
    response_mask[:, 0] = 0.0  # position 0 has no log-prob
    zeros = torch.zeros((b, width), dtype=torch.float32)
    return RolloutBatch(
        input_ids=input_ids, attention_mask=attention_mask, response_mask=response_mask,
        old_log_probs=zeros.clone(), rewards=torch.tensor([e.reward for e in episodes], dtype=torch.float32),
        group_ids=torch.as_tensor(list(group_ids), dtype=torch.long), entropies=zeros.clone(),
        prompt_lengths=torch.tensor([len(e.prompt_ids) for e in episodes], dtype=torch.long),
        info=[{**e.info, "texts": e.texts} for e in episodes])


@torch.no_grad()
def score_batch(policy: Policy, batch: RolloutBatch, micro_batch_size: int | None = None) -> RolloutBatch:
    """Fill ``old_log_probs`` and ``entropies`` from the (current) policy, masked to response tokens."""
    size = micro_batch_size or batch.batch_size
    log_probs, entropies = [], []
    for start in range(0, batch.batch_size, size):
        rows = slice(start, start + size)
        lp, ent = policy.score(batch.input_ids[rows], batch.attention_mask[rows], positions=batch.response_mask[rows],
                               prompt_lengths=None if batch.prompt_lengths is None else batch.prompt_lengths[rows])
        log_probs.append(lp.cpu())
        entropies.append(ent.cpu())
    mask = batch.response_mask
    return batch.replace(old_log_probs=torch.cat(log_probs) * mask, entropies=torch.cat(entropies) * mask)


def collect_rollout(policy: Policy, envs: Sequence[gym.Env], env_seeds: Sequence[int], group_ids: Sequence[int],
                    sampling: SamplingParams, seed: int, max_turns: int = DEFAULT_MAX_TURNS,
                    max_total_tokens: int | None = None, micro_batch_size: int | None = None,
                    grading_deadline_s: float | None = None) -> tuple[RolloutBatch, RolloutStats]:
    """Episodes in every env, packed and scored: the batch an algorithm trains on."""
    stats = RolloutStats()
    episodes = run_episodes(policy, envs, env_seeds, sampling, seed, max_turns, max_total_tokens, stats,
                            grading_deadline_s)
    batch = pack_episodes(episodes, group_ids, policy.pad_token_id)
    started = time.perf_counter()
    sampled = sampled_scores(episodes, batch.input_ids.shape)
    if sampled is None:
        batch = score_batch(policy, batch, micro_batch_size)
    else:  # the sampler's own numbers: a scoring pass's up to float32 rounding, without the pass
        batch = batch.replace(old_log_probs=sampled[0] * batch.response_mask,
                              entropies=sampled[1] * batch.response_mask)
    stats.time_score_s += time.perf_counter() - started
    return batch, stats


def sampled_scores(episodes: Sequence[Episode], shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``[B, T]`` log-probs and entropies recorded while sampling, placed as ``pack_episodes`` places the tokens;
    None unless every trainable segment has them (``Policy.sample`` withholds them under reduced precision)."""
    log_probs, entropies = torch.zeros(shape), torch.zeros(shape)
    for row, episode in enumerate(episodes):
        if len(episode.scores) != len(episode.segments):
            return None
        position = len(episode.prompt_ids)
        for (segment, trainable), score in zip(episode.segments, episode.scores):
            if trainable and segment:
                if score is None or len(score[0]) != len(segment):
                    return None
                log_probs[row, position:position + len(segment)] = torch.tensor(score[0])
                entropies[row, position:position + len(segment)] = torch.tensor(score[1])
            position += len(segment)
    return log_probs, entropies
