"""Step a batch of environments under one grading deadline, so hostile responses cannot stall a training step.

Each grading call is bounded on its own (``covgym.envs.verify_pool``), but a batch of responses that are all slow to
grade (LaTeX bombs, which an RL policy can learn to emit) would still take their sum one after another. Here the envs
of one turn step in helper threads that share the work, more of them joining only when a step has to wait
(math-verify runs in worker processes, so waiting threads do not hold the interpreter), every comparison inside runs
under the same absolute deadline, and a response whose grading gave no verdict in time scores 0 and is flagged
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
from typing import Any, Callable, Sequence

import gymnasium as gym

from covgym.envs.verify_pool import grading_deadline

#: Seconds past the deadline allowed for steps whose comparisons were cut at it to return (kill a worker, reply).
GRACE_S = 0.5
#: Most threads stepping one batch: slow steps (each waiting on a math-verify worker) hold one each.
HELPER_THREADS = 32
#: Seconds without a finished step after which another helper joins (a slow step outside the verify pool).
STALL_S = 0.05
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


def _step_one(env: gym.Env, action: Any, deadline_at: float,
              before_wait: Callable[[], None] | None = None) -> StepResult:
    with grading_deadline(deadline_at, before_wait) as deadline:
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
    """A turn's steps as a shared work list that helper threads take from, one unstarted step at a time.

    One helper starts; another joins whenever a step is about to wait on a math-verify worker
    (``GradingDeadline.before_wait``) or no step has finished for ``STALL_S`` (a slow step outside the pool), up
    to ``HELPER_THREADS``. So when every grade is fast one thread does the whole turn (128 arithmetic answers:
    about 2–6 ms instead of 1.5–3 ms in a plain loop on a loaded 2-core machine), and up to ``HELPER_THREADS``
    slow steps wait side by side while the others go on; steps beyond that wait for a free helper, and at the
    deadline every comparison returns at once. Once the caller stops waiting the batch is closed: unstarted
    steps are never taken, and steps still running are left to finish (``settle``).
    """

    def __init__(self, envs: Sequence[gym.Env], actions: Sequence[Any], deadline_at: float) -> None:
        self.envs, self.actions, self.deadline_at = list(envs), list(actions), deadline_at
        self.results: list[StepResult | BaseException | None] = [None] * len(self.envs)
        self.running: dict[int, threading.Event] = {}
        self.next_index, self.finished, self.helpers, self.closed = 0, 0, 0, False
        self.condition = threading.Condition()

    def add_helper(self) -> None:
        """Start one more helper while steps are waiting to be taken (and the cap allows)."""
        with self.condition:
            if self.closed or self.next_index >= len(self.envs) or self.helpers >= HELPER_THREADS:
                return
            self.helpers += 1
        _pool().submit(self.drain)

    def drain(self) -> None:
        while True:
            with self.condition:
                if self.closed or self.next_index >= len(self.envs):
                    return
                index = self.next_index
                self.next_index += 1
                done = self.running[index] = threading.Event()
            try:
                result: StepResult | BaseException = _step_one(self.envs[index], self.actions[index],
                                                               self.deadline_at, self.add_helper)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
                result = error
            with self.condition:
                self.results[index] = result
                self.finished += 1
                done.set()
                if self.finished == len(self.envs):  # the caller sleeps until then (or a stall check)
                    self.condition.notify_all()

    def wait(self, until: float) -> list[StepResult]:
        self.add_helper()
        with self.condition:
            while self.finished < len(self.envs) and time.monotonic() < until:
                finished = self.finished
                self.condition.wait(min(STALL_S, max(until - time.monotonic(), 0.0)))
                if self.finished == finished and self.next_index < len(self.envs):
                    self.add_helper()  # a stall outside the pool: let another thread take the next step
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
    return _Batch(envs, actions, deadline_at).wait(deadline_at + GRACE_S)
