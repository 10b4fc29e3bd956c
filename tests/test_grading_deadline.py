"""One grading deadline per step: a batch of LaTeX bombs is cut off at it, counted, and normal answers still grade."""

from __future__ import annotations

import itertools
import threading
import time

import gymnasium as gym
import pytest

import covgym  # noqa: F401  (registers the envs)
from covgym.envs import verify_pool
from covgym.envs.verify_pool import grading_deadline
from covgym.measure.training_metrics import rollout_statistics
from covgym.models.policy import SamplingParams
from covgym.train import stepping
from covgym.train.rollout import pack_episodes, run_episodes

DEADLINE_S = 2.5
#: Thread scheduling and killing the late workers on a loaded 2-core machine.
SLACK_S = stepping.GRACE_S + 2.0
BOMBS = [f"\\boxed{{{a}^{{{b}^{{{c}^{{{d}}}}}}}}}" for a, b, c, d in itertools.product(range(6, 10), repeat=4)][:128]


class TextPolicy:
    """Stands in for ``Policy``: token ``i`` of a reply decodes to ``replies[i]``; prompts encode to one token."""

    pad_token_id = 0

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies

    def encode_prompt(self, text: str) -> list[int]:
        return [1]

    def encode_observation(self, text: str) -> list[int]:
        return [1]

    def decode(self, ids: list[int]) -> str:
        return self.replies[ids[0]]

    def generate(self, prompts, params, stop_strings=(), seed=None):
        return [[index] for index in range(len(prompts))]


def _arithmetic_envs(count: int) -> list[gym.Env]:
    return [gym.make("covgym/Arithmetic-v0") for _ in range(count)]


def test_bombs_are_distinct_and_really_slow():
    assert len(set(BOMBS)) == 128
    verify_pool.POOL.equal("1", "1+0")  # a warm worker, so only the bomb's own time is measured
    with grading_deadline(time.monotonic() + 1.0) as deadline:
        started = time.monotonic()
        equal, reason = verify_pool.POOL.equal("5", BOMBS[-1][len("\\boxed{"):-1])
    assert not equal and deadline.timed_out, reason  # would not answer in 1 s: cut at the deadline
    assert time.monotonic() - started < 1.0 + SLACK_S


def test_a_batch_of_128_bombs_is_graded_within_the_step_deadline():
    replies = BOMBS + ["placeholder"] * 16
    envs = _arithmetic_envs(len(replies))
    seeds = list(range(len(replies)))
    for env, seed in zip(envs, seeds):
        env.reset(seed=seed)
    answers = [env.unwrapped.problem.answer for env in envs[128:]]
    replies[128:136] = [f"The answer is \\boxed{{{answer}}}" for answer in answers[:8]]  # right
    replies[136:] = [f"\\boxed{{{int(answer) + 1}}}" for answer in answers[8:]]  # wrong
    policy = TextPolicy(replies)
    started = time.monotonic()
    episodes = run_episodes(policy, envs, seeds, SamplingParams(), seed=0, grading_deadline_s=DEADLINE_S)
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE_S + SLACK_S, f"graded in {elapsed:.1f}s"
    statistics = rollout_statistics(pack_episodes(episodes, seeds, policy.pad_token_id))
    assert all(e.reward == 0.0 and not e.info["correct"] for e in episodes[:128])
    # a bomb may, rarely, get a verdict in time (math-verify running out of memory: "not equivalent (MemoryError)")
    graded = [e.info["reason"] for e in episodes[:128] if not e.info.get("grading_timeout")]
    assert all("MemoryError" in reason or "crashed" in reason for reason in graded), graded
    assert statistics["grading_timeouts"] == 128 - len(graded) >= 120
    assert [e.reward for e in episodes[128:]] == [1.0] * 8 + [0.0] * 8, [e.info["reason"] for e in episodes[128:]]
    assert not any(e.info.get("grading_timeout") for e in episodes[128:])
    assert statistics["accuracy"] == pytest.approx(8 / len(replies))


def test_without_a_deadline_nothing_is_counted_and_steps_run_inline():
    envs = _arithmetic_envs(4)
    for seed, env in enumerate(envs):
        env.reset(seed=seed)
    replies = [f"\\boxed{{{env.unwrapped.problem.answer}}}" for env in envs]
    threads = []
    original = envs[0].step

    def spying_step(action):
        threads.append(threading.current_thread())
        return original(action)

    envs[0].step = spying_step
    episodes = run_episodes(TextPolicy(replies), envs, range(4), SamplingParams(), seed=0)
    assert [e.reward for e in episodes] == [1.0] * 4 and threads == [threading.main_thread()]
    assert rollout_statistics(pack_episodes(episodes, range(4), 0))["grading_timeouts"] == 0.0


class SlowGraderEnv(gym.Env):
    """A user's env whose grader computes in-process, out of the verify pool's reach."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.steps_running = seconds, 0

    def reset(self, *, seed=None, options=None):
        assert self.steps_running == 0, "reset while a step is still running"
        return "prompt", {}

    def step(self, action):
        self.steps_running += 1
        time.sleep(self.seconds)
        self.steps_running -= 1
        return "", 1.0, True, False, {"correct": True}


def test_a_step_outliving_the_deadline_is_abandoned_and_its_env_waited_for():
    envs = [SlowGraderEnv(0.0), SlowGraderEnv(2.0)]
    started = time.monotonic()
    results = stepping.step_envs(envs, ["a", "b"], time.monotonic() + 0.2)
    assert time.monotonic() - started < 0.2 + stepping.GRACE_S + 0.5
    assert [r.timed_out for r in results] == [False, True] and [r.reward for r in results] == [1.0, 0.0]
    stepping.settle(envs[1])  # the rollout calls this before reusing the env
    assert envs[1].steps_running == 0
    envs[1].reset()


def test_common_fast_path_overhead_is_small():
    """128 arithmetic answers graded in parallel threads cost at most a few ms more than a plain loop."""
    envs = _arithmetic_envs(128)
    for seed, env in enumerate(envs):
        env.reset(seed=seed)
    replies = [f"\\boxed{{{env.unwrapped.problem.answer}}}" for env in envs]

    def timed(deadline_at):
        for seed, env in enumerate(envs):
            env.reset(seed=seed)
        begun = time.perf_counter()
        results = stepping.step_envs(envs, replies, deadline_at)
        assert all(r.reward == 1.0 for r in results)
        return time.perf_counter() - begun

    timed(time.monotonic() + 30)  # threads made once, then reused
    inline = min(timed(None) for _ in range(3))
    threaded = min(timed(time.monotonic() + 30) for _ in range(3))
    assert threaded < inline + 0.1, f"inline {inline * 1e3:.1f} ms, threaded {threaded * 1e3:.1f} ms"


def test_the_deadline_is_a_validated_config_field():
    from covgym.train.config import ConfigError, RolloutConfig, TrainConfig, validate

    assert RolloutConfig().grading_deadline_s == 30.0
    with pytest.raises(ConfigError, match="grading_deadline_s"):
        validate(TrainConfig(rollout=RolloutConfig(grading_deadline_s=-1.0)))
