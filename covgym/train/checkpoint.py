"""Crash-safe checkpoints: write to a temporary file, fsync, rename; keep the last N.

A reader never sees a half-written checkpoint: either the rename happened (complete file) or it did not
(the previous checkpoints are untouched). Files that fail to load are reported by name.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


class CheckpointReadError(CheckpointError):
    """A checkpoint to resume from cannot be read: bad input (exit code 2), like any other."""


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync it, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {error.strerror or error} "
                              f"(is the disk full or the directory read-only?)") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of complete checkpoints, oldest first (temporary files are ignored)."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` for ``step`` atomically and delete all but the newest ``keep`` checkpoints."""
    path = checkpoint_dir(run_dir) / f"step-{step:08d}.pt"
    atomic_write(path, lambda handle: torch.save({**state, "step": step, "rng": rng_state()}, handle))
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None when the run has none."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return None
    _, path = checkpoints[-1]
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - a corrupt file becomes one readable message
        raise CheckpointReadError(f"checkpoint {path} is unreadable ({type(error).__name__}); delete it to resume "
                              f"from the previous one") from None
