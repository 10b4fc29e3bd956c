"""math-verify with a hard time bound in any thread or process: persistent worker processes, killed when late.

math-verify's own timeout uses ``signal.alarm``, which only works on the main thread, and a pathological
expression (``9^{9^{9^9}}``) can hold the interpreter far longer than any sensible budget. Here each comparison
is sent to a child process (started with ``subprocess``, so no fork of a threaded trainer and no re-import of
``__main__`` as with ``multiprocessing``); if the reply is late the child is killed and a replacement is started
in the background. Workers start lazily, so code that never needs math-verify never pays for one.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

_SERVER = Path(__file__).with_name("_verify_server.py")
_LAUNCH = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
#: Seconds one comparison may take before its worker is killed (``COVGYM_VERIFY_TIMEOUT`` overrides).
DEFAULT_TIMEOUT_S = float(os.environ.get("COVGYM_VERIFY_TIMEOUT", "5"))
#: Seconds a fresh worker may take to import math-verify.
STARTUP_TIMEOUT_S = 120.0
_CACHE_SIZE = 4096
_ALL_WORKERS: weakref.WeakSet[_Worker] = weakref.WeakSet()


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
    """Idle workers shared by all threads; a caller with none idle starts its own, so callers never queue."""

    def __init__(self, max_idle: int = 4) -> None:
        self.max_idle = max_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._cache: OrderedDict[tuple[str, str], tuple[bool, str]] = OrderedDict()

    def equal(self, gold: str, candidate: str, timeout_s: float | None = None) -> tuple[bool, str]:
        """Whether math-verify finds ``candidate`` equal to ``gold`` (gold first: ``verify`` is asymmetric).

        Returns ``(equal, reason)``; never raises; returns within ``timeout_s`` plus a worker start when none is
        idle. Late, crashed or unavailable workers count as "not equal" with the reason said.
        """
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        key = (gold, candidate)
        with self._lock:
            self._check_owner()
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        worker = self._take()
        if worker is None:
            return False, "math-verify worker unavailable"
        reply = worker.ask(gold, candidate, timeout_s)
        if reply is None:
            worker.kill()
            self._replace_in_background()
            result = (False, f"math-verify gave no answer within {timeout_s:g}s (worker killed)")
        else:
            self._give(worker)
            error = reply.get("error") or ""
            equal = bool(reply.get("equal"))
            result = (equal, "math-verify equivalent" if equal else
                      f"math-verify not equivalent{' (' + error + ')' if error else ''}")
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    def close(self) -> None:
        """Stop the idle workers (busy ones are stopped at interpreter exit)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()

    def _check_owner(self) -> None:
        if os.getpid() != self._owner_pid:  # forked: the parent's workers and pipes are not ours
            self._idle, self._owner_pid = [], os.getpid()

    def _take(self) -> _Worker | None:
        with self._lock:
            self._check_owner()
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is None:
                    return worker
        try:
            return _Worker()
        except (OSError, RuntimeError):
            return None

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle and os.getpid() == self._owner_pid:
                self._idle.append(worker)
                return
        worker.kill()

    def _replace_in_background(self) -> None:
        def start() -> None:
            try:
                self._give(_Worker())
            except (OSError, RuntimeError):
                pass

        threading.Thread(target=start, daemon=True, name="covgym-verify-spawn").start()


def _kill_all() -> None:
    for worker in list(_ALL_WORKERS):
        worker.kill()


atexit.register(_kill_all)

#: The process-wide pool the graders use.
POOL = VerifyPool()
