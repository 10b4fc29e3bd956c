"""How many CPU threads torch uses, chosen for the model's size.

A model of a few million parameters runs ops of microseconds; intra-op threads then spend more time waiting for
each other than computing, and when the cores are shared (a browser, a second run, a test suite) a thread that
is descheduled stalls every op. Measured on 2 cores beside a busy process: a tiny-model GRPO step took 7.1 s at
torch's default of 2 threads and 1.2 s with one (benchmarks/tiny_step.py records the current figures). So small
models run on one thread unless the user said otherwise; large models keep torch's default, where threads pay.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

#: Below this many parameters a CPU run uses one thread by default.
SMALL_MODEL_PARAMETERS = 30_000_000


def user_set_threads() -> bool:
    """The user chose a thread count through the environment (``OMP_NUM_THREADS``), which covgym respects."""
    return bool(os.environ.get("OMP_NUM_THREADS"))


def auto_threads(parameter_count: int) -> int | None:
    """1 for a small model unless the user set ``OMP_NUM_THREADS``; ``None`` (keep torch's choice) otherwise."""
    if user_set_threads() or parameter_count >= SMALL_MODEL_PARAMETERS:
        return None
    return 1


def apply_threads(requested: int, model: torch.nn.Module | None = None, device: str | torch.device = "cpu"
                  ) -> int:
    """Set torch's intra-op threads: ``requested`` when > 0, else the automatic choice for ``model`` on CPU.
    Returns the number in effect."""
    if requested < 0:
        raise ValueError(f"threads: must be >= 0 (0 = auto), got {requested}")
    if requested > 0:
        torch.set_num_threads(requested)
    elif model is not None and torch.device(device).type == "cpu":
        chosen = auto_threads(sum(p.numel() for p in model.parameters()))
        if chosen is not None:
            torch.set_num_threads(chosen)
    return torch.get_num_threads()


@contextlib.contextmanager
def limited_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch threads (``None``: unchanged), restoring the previous number after."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
