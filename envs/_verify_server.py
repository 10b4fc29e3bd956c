"""Child process that runs math-verify for ``covgym.envs.verify_pool``; started by path, imports no covgym.

Protocol: one JSON object a line on stdin ``{"gold": str, "candidate": str, "timeout": float}``, one JSON reply a
line on stdout ``{"equal": bool, "error": str}``; ``error`` is ``"TimeoutException"`` when math-verify's own
time bound cut the comparison (it logs that and answers "no match", which is not a verdict). The first line
written is ``{"ready": true}``. The parent kills this process when a reply is late, so nothing here has to be trusted to stop on its own; math-verify's own
signal timeouts work here because requests are served on the main thread. Only LaTeX extraction is used:
math-verify's plain-expression extraction calls sympy's ``parse_expr``, which evaluates Python.
"""

import json
import logging
import os
import sys


def _limit_memory(max_bytes: int) -> None:
    """Cap the address space so a runaway expression fails with MemoryError instead of swapping the machine."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
    except (ImportError, ValueError, OSError):  # not POSIX, or the limit is not allowed: the parent's kill remains
        pass


class _TimeoutFlag(logging.Handler):
    """Notices math-verify's own timeouts, which it logs and then reports as "no match" instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if "Timeout" in record.getMessage():
            self.fired = True


def _serve() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol stream
    _limit_memory(int(os.environ.get("COVGYM_VERIFY_MAX_BYTES", str(4 * 2**30))))
    from math_verify import LatexExtractionConfig, parse, verify

    flag = _TimeoutFlag()
    logging.getLogger("math_verify").addHandler(flag)
    config = [LatexExtractionConfig()]
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        reply = {"equal": False, "error": ""}
        flag.fired = False
        try:
            request = json.loads(line)
            timeout = max(1, int(request.get("timeout", 5)))
            gold = parse(f"${request['gold']}$", extraction_config=config, parsing_timeout=timeout)
            candidate = parse(f"${request['candidate']}$", extraction_config=config, parsing_timeout=timeout)
            if gold and candidate:
                reply["equal"] = bool(verify(gold, candidate, timeout_seconds=timeout))
            if flag.fired and not reply["equal"]:  # "not equal" only because time ran out: no verdict
                reply["error"] = "TimeoutException"
        except BaseException as error:  # math-verify's TimeoutException derives from BaseException
            if isinstance(error, KeyboardInterrupt):
                return
            reply["error"] = type(error).__name__
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    _serve()
