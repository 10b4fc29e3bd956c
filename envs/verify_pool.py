"""math-verify with a hard time bound in any thread or process: persistent worker processes, killed when late.

math-verify's own timeout uses ``signal.alarm``, which only works on the main thread, and a pathological
expression (``9^{9^{9^9}}``) can hold the interpreter far longer than any sensible budget. Here each comparison
is sent to a child process (started with ``subprocess``, so no fork of a threaded trainer and no re-import of
``__main__`` as with ``multiprocessing``); if the reply is late the child is killed and a replacement is started
in the background. Workers start lazily, so code that never needs math-verify never pays for one, and at most
``DEFAULT_WORKERS`` live at once. ``grading_deadline`` gives a whole batch of comparisons one absolute deadline
(the rollout grades a step's responses in parallel threads under it, see ``covgym.train.stepping``).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

_SERVER = Path(__file__).with_name("_verify_server.py")
_LAUNCH = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
#: Seconds one comparison may take before its worker is killed (``COVGYM_VERIFY_TIMEOUT`` overrides).
DEFAULT_TIMEOUT_S = float(os.environ.get("COVGYM_VERIFY_TIMEOUT", "5"))
#: Workers alive at once (``COVGYM_VERIFY_WORKERS`` overrides): comparisons beyond it wait for a free one.
DEFAULT_WORKERS = int(os.environ.get("COVGYM_VERIFY_WORKERS", "0")) or max(2, min(8, os.cpu_count() or 2))
#: Seconds a fresh worker may take to import math-verify.
STARTUP_TIMEOUT_S = 120.0
_CACHE_SIZE = 4096
_ALL_WORKERS: weakref.WeakSet[_Worker] = weakref.WeakSet()


@dataclass
class GradingDeadline:
    """An absolute time (``time.monotonic()``) by which every comparison made under it must answer.

    ``timed_out`` turns true when one of them gave no verdict in time (cut by this deadline or by its own
    per-comparison bound): the caller then knows the response was not really graded.
    """

    at: float
    timed_out: bool = False
    #: Called before a comparison blocks on a worker (the rollout starts another stepping thread then).
    before_wait: Callable[[], None] | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()


_DEADLINE: ContextVar[GradingDeadline | None] = ContextVar("covgym_grading_deadline", default=None)


@contextmanager
def grading_deadline(at: float, before_wait: Callable[[], None] | None = None) -> Iterator[GradingDeadline]:
    """Bound every ``VerifyPool.equal`` call in this thread (this context) by the absolute time ``at``."""
    deadline = GradingDeadline(at, before_wait=before_wait)
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


class _Worker:
    """One child process and a reader thread that turns its stdout into a queue of replies."""

    def __init__(self) -> None:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", _LAUNCH, str(_SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", env=environment)
        _ALL_WORKERS.add(self)
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="covgym-verify-reader").start()
        ready = self._reply(STARTUP_TIMEOUT_S)
        if not (ready and ready.get("ready")):
            self.kill()
            raise RuntimeError("math-verify worker did not start")

    def _read(self) -> None:
        stream = self.process.stdout
        try:
            for line in stream:  # type: ignore[union-attr]
                self.replies.put(line)
        except (OSError, ValueError):
            pass
        self.replies.put(None)

    def _reply(self, timeout_s: float) -> dict | None:
        try:
            line = self.replies.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if line is None:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None

    def ask(self, gold: str, candidate: str, timeout_s: float) -> dict | None:
        """The worker's reply, or None when it is late or dead (the caller then kills it)."""
        request = json.dumps({"gold": gold, "candidate": candidate, "timeout": max(1, int(timeout_s))})
        try:
            self.process.stdin.write(request + "\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):
            return None
        return self._reply(timeout_s)

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass


class VerifyPool:
    """At most ``max_workers`` live workers shared by all threads; a caller with none idle waits for one.

    The cap keeps a batch of hostile responses from starting one math-verify process each (a storm of imports
    on a small machine); waiting is bounded by the caller's grading deadline when one is set
    (``grading_deadline``), so a queue of slow comparisons never holds a caller past it.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max(1, int(max_workers or DEFAULT_WORKERS))
        self._idle: list[_Worker] = []
        self._live = 0  # workers started or starting by this pool and not killed
        self._start_failures = 0
        self._condition = threading.Condition()
        self._owner_pid = os.getpid()
        self._cache: OrderedDict[tuple[str, str], _Verdict] = OrderedDict()

    def equal(self, gold: str, candidate: str, timeout_s: float | None = None) -> tuple[bool, str]:
        """Whether math-verify finds ``candidate`` equal to ``gold`` (gold first: ``verify`` is asymmetric).

        Returns ``(equal, reason)``; never raises. One comparison may compute for ``timeout_s`` (default
        ``DEFAULT_TIMEOUT_S``), and never past the deadline of an enclosing ``grading_deadline``, which also
        bounds the wait for a free worker. Late, crashed or unavailable workers count as "not equal" with the
        reason said; a late answer marks the enclosing deadline ``timed_out``.
        """
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        deadline = _DEADLINE.get()
        key = (gold, candidate)
        with self._condition:
            self._check_owner()
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is not None:
            return _settle(cached, deadline)
        if deadline is not None and deadline.remaining() <= 0:
            return _settle(_Verdict(False, "grading deadline passed", timed_out=True), deadline)
        if deadline is not None and deadline.before_wait is not None:
            deadline.before_wait()
        worker = self._take(deadline)
        if worker is None:
            if deadline is not None and deadline.remaining() <= 0:
                return _settle(_Verdict(False, "grading deadline passed before a math-verify worker was free",
                                        timed_out=True), deadline)
            return _settle(_Verdict(False, "math-verify worker unavailable", timed_out=deadline is not None), deadline)
        budget = timeout_s if deadline is None else min(timeout_s, deadline.remaining())
        if budget <= 0:
            self._give(worker)
            return _settle(_Verdict(False, "grading deadline passed", timed_out=True), deadline)
        reply = worker.ask(gold, candidate, budget)
        if reply is None:
            crashed = worker.process.poll() is not None  # e.g. out of memory: an answer, not a timeout
            self._discard(worker)
            if crashed:
                verdict = _Verdict(False, "math-verify worker crashed (worker replaced)")
            else:
                verdict = _Verdict(False, f"math-verify gave no answer within {budget:.3g}s (worker killed)",
                                   timed_out=True)
            if budget < timeout_s:  # cut by the caller's deadline, not judged: not cached
                return _settle(verdict, deadline)
        else:
            self._give(worker)
            error = reply.get("error") or ""
            equal = bool(reply.get("equal"))
            if error == "TimeoutException":  # math-verify's own bound (whole seconds) ran out first
                verdict = _Verdict(False, f"math-verify timed out within {budget:.3g}s", timed_out=True)
                if budget < timeout_s:
                    return _settle(verdict, deadline)
            else:
                verdict = _Verdict(equal, "math-verify equivalent" if equal else
                                   f"math-verify not equivalent{' (' + error + ')' if error else ''}")
        with self._condition:
            self._cache[key] = verdict
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return _settle(verdict, deadline)

    def close(self) -> None:
        """Stop the idle workers (busy ones are stopped at interpreter exit)."""
        with self._condition:
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        for worker in idle:
            worker.kill()

    def _check_owner(self) -> None:
        """Call with the lock held: in a forked child the parent's workers and pipes are not ours."""
        if os.getpid() != self._owner_pid:
            self._idle, self._live, self._owner_pid = [], 0, os.getpid()

    def _take(self, deadline: GradingDeadline | None) -> _Worker | None:
        """An idle live worker, starting one if under the cap; None when the deadline passes or a start fails."""
        give_up = time.monotonic() + STARTUP_TIMEOUT_S + DEFAULT_TIMEOUT_S if deadline is None else deadline.at
        with self._condition:
            self._check_owner()
            failures = self._start_failures
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.process.poll() is None:
                        return worker
                    self._live -= 1
                    worker.kill()
                remaining = give_up - time.monotonic()
                if remaining <= 0 or self._start_failures != failures:
                    return None
                if self._live < self.max_workers:
                    self._start_in_background()
                self._condition.wait(remaining)

    def _give(self, worker: _Worker) -> None:
        """Return a worker to the idle list (a dead one is dropped from the count instead)."""
        with self._condition:
            if os.getpid() == self._owner_pid:
                if worker.process.poll() is None:
                    self._idle.append(worker)
                    self._condition.notify()
                    return
                self._live -= 1
                self._condition.notify()
        worker.kill()

    def _discard(self, worker: _Worker) -> None:
        """Kill a late or dead worker and start its replacement in the background."""
        worker.kill()
        with self._condition:
            if os.getpid() != self._owner_pid:
                return
            self._live -= 1
            if self._live < self.max_workers:
                self._start_in_background()

    def _start_in_background(self) -> None:
        """Call with the lock held: count a new worker now, hand it to the idle list once it has started."""
        self._live += 1

        def start() -> None:
            try:
                worker = _Worker()
            except (OSError, RuntimeError):
                with self._condition:
                    self._live -= 1
                    self._start_failures += 1
                    self._condition.notify_all()
                return
            self._give(worker)

        threading.Thread(target=start, daemon=True, name="covgym-verify-spawn").start()


@dataclass(frozen=True)
class _Verdict:
    equal: bool
    reason: str
    timed_out: bool = False


def _settle(verdict: _Verdict, deadline: GradingDeadline | None) -> tuple[bool, str]:
    if verdict.timed_out and deadline is not None:
        deadline.timed_out = True
    return verdict.equal, verdict.reason


def _kill_all() -> None:
    for worker in list(_ALL_WORKERS):
        worker.kill()


atexit.register(_kill_all)

#: The process-wide pool the graders use.
POOL = VerifyPool()
