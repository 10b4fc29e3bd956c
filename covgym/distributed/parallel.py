"""Data parallelism for the trainer on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Launched as ``torchrun --nproc_per_node N -m covgym train ...``. Each rank rolls out its share of the groups;
an optimizer mini-batch is the union of the ranks' slices of one global random order; losses are normalised by
the global token (or sequence) count and gradients are *summed* across ranks, so that the update is the one a
single process would make on the whole mini-batch. Only rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def init_from_environment(device: torch.device) -> bool:
    """Join the process group described by torchrun's variables; False when running alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_device(device: torch.device) -> torch.device:
    """One GPU per rank (``LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and is_distributed():
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def collective_device() -> torch.device:
    """Where small tensors for collectives live: NCCL only reduces CUDA tensors, gloo CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_scalar(value: float) -> float:
    """Sum of a number over ranks (itself when alone)."""
    if not is_distributed():
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(total)
    return float(total.item())


def any_rank(flag: bool) -> bool:
    """True when ``flag`` holds on at least one rank (itself when alone)."""
    return sum_scalar(1.0 if flag else 0.0) > 0


def sum_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """All-reduce (sum) every gradient in one flat buffer; a parameter without a gradient counts as zero."""
    if not is_distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for parameter, grad in zip(parameters, grads):
        count = grad.numel()
        parameter.grad = flat[offset:offset + count].view_as(grad).clone()
        offset += count


def mean_metrics(metrics: dict[str, float], summed: frozenset[str] = frozenset()) -> dict[str, float]:
    """Average each metric over the ranks that report it (keys may differ between ranks); sum those in ``summed``
    (a rank's share of a total, such as a loss normalised by the global token count)."""
    if not is_distributed():
        return metrics
    gathered: list[dict[str, float] | None] = [None] * world_size()
    dist.all_gather_object(gathered, metrics)
    keys = sorted({key for part in gathered if part for key in part})
    averaged = {}
    for key in keys:
        values = [part[key] for part in gathered if part and key in part and part[key] is not None]
        if not values:
            averaged[key] = float("nan")
        else:
            averaged[key] = sum(values) if key in summed else sum(values) / len(values)
    return averaged


def barrier() -> None:
    if is_distributed():
        dist.barrier()
