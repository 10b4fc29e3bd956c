"""FSDP for the policy: shard the transformer layers' parameters, gradients and optimizer state across ranks.

``torch.distributed.fsdp.fully_shard`` (FSDP2) is applied to every decoder layer, which is where nearly all the
weights of a large model live; the embeddings, final norm and output head stay replicated and are reduced like
data-parallel gradients. Each sharded layer gathers its weights just for its own forward and backward.

Every forward of a sharded layer is a collective, so all ranks must run the same number of forwards: the trainer
turns on ``synced_gpus`` generation, keeps multi-turn rollouts in lock-step, evaluates on every rank and turns
off the work that depends on a rank's own data (shared-prompt prefill, the entropy-dynamics probe).

FSDP averages the sharded gradients over ranks, while covgym's losses are normalised by *global* token counts
and expect gradients *summed* over ranks (as ``parallel.sum_gradients`` does); ``restore_gradient_sums`` undoes
the average. Gloo has no pre-scaled sum, so the factor is applied afterwards on every backend alike.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn


def _dtensor_type() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a Hugging Face causal LM (``model.model.layers`` and the like)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    for name in ("layers", "h", "blocks", "block"):
        layers = getattr(decoder, name, None)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return list(layers)
    raise ValueError(f"fsdp: cannot find the transformer layers of {type(model).__name__} (looked for "
                     f"layers/h/blocks/block on its decoder); train it without --fsdp")


def shard_layers(model: nn.Module) -> int:
    """Apply FSDP2 to each decoder layer in place; returns how many layers were sharded."""
    from torch.distributed.fsdp import fully_shard

    layers = decoder_layers(model)
    for layer in layers:  # each layer is its own FSDP root, whose default would keep it gathered after forward
        fully_shard(layer, reshard_after_forward=True)
    return len(layers)


def is_sharded(parameter: torch.Tensor) -> bool:
    return isinstance(parameter, _dtensor_type())


def restore_gradient_sums(parameters: Iterable[nn.Parameter]) -> None:
    """FSDP averaged the sharded gradients over ranks; multiply back to the sum covgym's losses expect."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    for parameter in parameters:
        if parameter.grad is not None and is_sharded(parameter):
            parameter.grad.mul_(world)


def clip_gradients(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global gradient-norm clipping over a mix of sharded (DTensor) and replicated parameters.

    A shard's squared norm is summed over ranks (shards are disjoint); a replicated gradient is identical on
    every rank after its all-reduce and counted once. Returns the total norm before clipping.
    """
    sharded = torch.zeros((), dtype=torch.float64)
    replicated = torch.zeros((), dtype=torch.float64)
    for parameter in parameters:
        if parameter.grad is None:
            continue
        if is_sharded(parameter):
            sharded += parameter.grad.to_local().double().pow(2).sum().cpu()
        else:
            replicated += parameter.grad.detach().double().pow(2).sum().cpu()
    if dist.is_initialized():
        from covgym.distributed.parallel import collective_device

        total = sharded.to(collective_device())
        dist.all_reduce(total)
        sharded = total.cpu()
    norm = torch.sqrt(sharded + replicated)
    if math.isfinite(float(norm)) and max_norm > 0 and float(norm) > max_norm:
        scale = max_norm / (float(norm) + 1e-6)
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.mul_(scale)
    return norm.float()


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """Unsharded model (and optimizer) state dicts on CPU, on rank 0 (empty elsewhere).

    A collective: every rank must call it.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = None if optimizer is None else get_optimizer_state_dict(model, optimizer, options=options)
    return model_state, optimizer_state


def load_full_state(model: nn.Module, model_state: dict[str, Any], optimizer: torch.optim.Optimizer | None = None,
                    optimizer_state: dict[str, Any] | None = None) -> None:
    """Load unsharded state dicts (every rank read the same checkpoint) into the sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
