"""Launch gloo process groups from tests: a file-backed store, ranks that leave together, tracebacks kept.

A ``file://`` store has no server process, so no rank depends on rank 0 staying alive while it tears down (with a
TCP store hosted by rank 0, a late rank's shutdown can abort once rank 0 has exited), and no port can be taken
between choosing and binding it.
"""

from __future__ import annotations

import os
import traceback
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def new_store(directory: Path) -> str:
    """A fresh store file path for one process group."""
    return str(directory / f"store-{uuid.uuid4().hex}")


def join_group(rank: int, world: int, store: str, timeout_s: float = 300.0) -> None:
    """Set torchrun's variables (the trainer reads them) and join the group on the file store."""
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))


def leave_group() -> None:
    dist.barrier()  # nobody tears down while a peer still talks
    dist.destroy_process_group()


def _run_rank(rank: int, function: Callable[..., None], args: tuple, world: int, store: str, errors: str) -> None:
    try:
        join_group(rank, world, store)
        function(rank, world, *args)
        leave_group()
    except BaseException:
        Path(errors, f"error-rank{rank}.txt").write_text(traceback.format_exc())
        raise


def run_ranks(function: Callable[..., None], args: tuple[Any, ...], directory: Path, world: int = 2) -> None:
    """Run ``function(rank, world, *args)`` in ``world`` spawned processes joined in one gloo group.

    ``function`` must be importable (module level). A failure is raised with every failing rank's traceback.
    """
    errors = directory / f"errors-{uuid.uuid4().hex}"
    errors.mkdir(parents=True)
    try:
        mp.start_processes(_run_rank, args=(function, args, world, new_store(directory), str(errors)), nprocs=world,
                           join=True, start_method="spawn")
    except Exception as error:
        reports = "\n".join(f.read_text() for f in sorted(errors.glob("error-rank*.txt")))
        raise AssertionError(f"a rank failed: {error}\n{reports}") from error
