"""Step a batch of environments under one grading deadline, so hostile responses cannot stall a training step.

Each grading call is bounded on its own (``covgym.envs.verify_pool``), but a batch of responses that are all slow
to grade (LaTeX bombs, which an RL policy can learn to emit) would still take their sum one after another. Here
the envs of one turn step in a few helper threads that share the work (math-verify runs in worker processes, so
threads do not contend for the interpreter while they wait), every comparison inside runs under the same
absolute deadline, and a response whose grading gave no verdict in time scores 0 and is flagged
``grading_timeout`` in its ``info``; so does one whose step had not started when the deadline passed.

A step that is still running when the deadline (plus ``GRACE_S``) has passed — only code outside the verify pool
can outlive it, e.g. a user's grader computing in-process — is abandoned: it scores 0 the same way, and its env
is not reset or stepped again until that call has returned, so no env is ever used by two threads at once.
Envs must therefore not share mutable state with each other (covgym's do not).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import gymnasium as gym

from covgym.envs.verify_pool import grading_deadline

#: Seconds past the deadline allowed for steps whose comparisons were cut at it to return (kill a worker, reply).
GRACE_S = 0.5
#: Threads stepping one batch: slow steps (each waiting on a math-verify worker) hold one each, the rest go on.
HELPER_THREADS = 32
_MAX_THREADS = 8 * HELPER_THREADS  # made lazily, reused; room for batches stepped concurrently or left running
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_lingering: weakref.WeakKeyDictionary[gym.Env, threading.Event] = weakref.WeakKeyDictionary()


@dataclass
class StepResult:
    """What ``env.step`` returned, and whether its grading ran out of time (then the reward is 0)."""

    observation: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    timed_out: bool = False


def _timed_out_result(reason: str) -> StepResult:
    return StepResult("", 0.0, False, True, {"correct": False, "reason": reason, "grading_timeout": True}, True)


def _step_one(env: gym.Env, action: Any, deadline_at: float) -> StepResult:
    with grading_deadline(deadline_at) as deadline:
        observation, reward, terminated, truncated, info = env.step(action)
    result = StepResult(observation, float(reward), bool(terminated), bool(truncated), dict(info), deadline.timed_out)
    if result.timed_out:  # not graded in time: scores 0 whatever the env made of the missing verdict
        result.reward = 0.0
        result.info.update(correct=False, grading_timeout=True)
    return result


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="covgym-step")
        return _executor


class _Batch:
    """A turn's steps as a shared work list: helper threads take the next unstarted one until none is left.

    Waking a few helpers instead of one future per env keeps the common case (every grade fast) within a few
    milliseconds of a plain loop. Once the caller stops waiting the batch is closed: unstarted steps are never
    taken, and steps still running are left to finish (``settle``).
    """

    def __init__(self, envs: Sequence[gym.Env], actions: Sequence[Any], deadline_at: float) -> None:
        self.envs, self.actions, self.deadline_at = list(envs), list(actions), deadline_at
        self.results: list[StepResult | BaseException | None] = [None] * len(self.envs)
        self.running: dict[int, threading.Event] = {}
        self.next_index, self.finished, self.closed = 0, 0, False
        self.condition = threading.Condition()

    def drain(self) -> None:
        while True:
            with self.condition:
                if self.closed or self.next_index >= len(self.envs):
                    return
                index = self.next_index
                self.next_index += 1
                done = self.running[index] = threading.Event()
            try:
                result: StepResult | BaseException = _step_one(self.envs[index], self.actions[index], self.deadline_at)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
                result = error
            with self.condition:
                self.results[index] = result
                self.finished += 1
                done.set()
                self.condition.notify_all()

    def wait(self, until: float) -> list[StepResult]:
        with self.condition:
            while self.finished < len(self.envs) and time.monotonic() < until:
                self.condition.wait(until - time.monotonic())
            self.closed = True
            results = list(self.results)
            running = {index: event for index, event in self.running.items() if results[index] is None}
        for index, result in enumerate(results):
            if isinstance(result, BaseException):
                raise result
            if result is None:
                if index in running:
                    _lingering[self.envs[index]] = running[index]
                results[index] = _timed_out_result("grading deadline passed (step abandoned)" if index in running
                                                   else "grading deadline passed before this response's turn")
        return results  # type: ignore[return-value]


def settle(env: gym.Env) -> None:
    """Wait until a step of ``env`` abandoned at an earlier deadline has returned (call before using the env)."""
    event = _lingering.pop(env, None)
    if event is not None:
        event.wait()


def step_envs(envs: Sequence[gym.Env], actions: Sequence[Any], deadline_at: float | None) -> list[StepResult]:
    """``env.step(action)`` for each pair; with a deadline (``time.monotonic()`` time) in parallel and bounded by it.

    Without a deadline the envs step one after another in this thread, as a plain loop would. With one and a
    single env, it steps in this thread under the deadline (nothing to overlap). Exceptions from ``step``
    propagate, as from a plain loop.
    """
    for env in envs:
        settle(env)
    if deadline_at is None:
        return [StepResult(*env.step(action)) for env, action in zip(envs, actions)]
    if len(envs) == 1:
        return [_step_one(envs[0], actions[0], deadline_at)]
    batch = _Batch(envs, actions, deadline_at)
    executor = _pool()
    for _ in range(min(len(envs), HELPER_THREADS)):
        executor.submit(batch.drain)
    return batch.wait(deadline_at + GRACE_S)
