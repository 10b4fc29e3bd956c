"""Activation budget: checkpoint just enough decoder layers of a long update mini-batch to fit a memory budget.

Keeping every layer's activations for the backward pass is the fastest way to train, but they grow with the
mini-batch's positions: an 8 × 267-token SmolLM2-135M mini-batch keeps about 2.8 GiB, more than the weights,
gradients and AdamW state together. TRL checkpoints every layer of every mini-batch (about 1.2× the update's time
on CPU). covgym keeps everything while it fits ``budget`` bytes and, on a mini-batch that would not, checkpoints
the fewest decoder layers that make it fit (from the second on, evenly spread), so the recompute grows with the
excess rather than jumping to every layer.

The decision is taken during the forward pass itself, from what the first decoder layer saved for backward on
*this* batch (measured with saved-tensor hooks, parameters excluded), so it needs no per-architecture formula and
sees the real sequence lengths, attention kernel and dtype. Memory model, for ``R`` layers still to run, ``a``
bytes saved by one unchecked layer, ``h`` bytes of a layer's input (all a checkpointed layer keeps) and ``c`` of
the ``R`` layers checkpointed::

    saved ≈ used_so_far + (R − c)·a + c·h + (a if c else 0)      # the last term: one layer recomputed in backward

The budget covers activations only (not weights, gradients, optimizer state or the output head's chunks). A layer
is checkpointed by ``transformers``' own per-layer switch (``GradientCheckpointingLayer.gradient_checkpointing``),
non-reentrant; the recompute runs under ``recompute_context`` so that it sees the forward's attention settings.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch.utils.checkpoint import checkpoint

from covgym.models import DEFAULT_ACTIVATION_BUDGET_MB

__all__ = ["DEFAULT_ACTIVATION_BUDGET_MB", "ActivationBudget", "Plan", "choose_count", "decoder_layers",
           "estimated_bytes", "spread"]

logger = logging.getLogger(__name__)


def estimated_bytes(used: int, per_layer: int, layer_input: int, remaining: int, checkpointed: int) -> int:
    """Activation bytes a forward keeps when ``checkpointed`` of its ``remaining`` layers are checkpointed."""
    recompute = per_layer if checkpointed else 0
    return used + (remaining - checkpointed) * per_layer + checkpointed * layer_input + recompute


def choose_count(used: int, per_layer: int, layer_input: int, remaining: int, budget: int) -> int:
    """How many of the ``remaining`` layers to checkpoint: the fewest that fit ``budget`` (0 when keeping all
    fits); all of them when nothing fits (the least memory there is, a layer's input being smaller than what it
    saves for backward)."""
    for count in range(remaining + 1):
        if estimated_bytes(used, per_layer, layer_input, remaining, count) <= budget:
            return count
    return remaining


def spread(count: int, total: int) -> list[int]:
    """``count`` indices out of ``range(total)``, evenly spaced (the middle of each of ``count`` equal spans)."""
    return [(2 * i + 1) * total // (2 * count) for i in range(count)] if count else []


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks that ``transformers`` can checkpoint one by one (empty for other models)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # transformers < 4.52: no per-layer switch
        return []
    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


@dataclass
class Plan:
    """What one watched forward did: its positions, the activation bytes it estimated when deciding, the layers
    it checkpointed, and the bytes its saved tensors took as the hooks saw them (all of them when nothing was
    checkpointed; a checkpointed layer's inner tensors are the checkpoint's own, out of sight; 0 when the forward
    was not watched, being far below the budget)."""

    positions: int
    estimate_bytes: int = 0
    measured_bytes: int = 0
    checkpointed: tuple[int, ...] = ()  # indices into ``decoder_layers(model)``

    @property
    def checkpointed_layers(self) -> int:
        return len(self.checkpointed)


@dataclass
class _Pass:
    positions: int
    adapt: bool
    parameters: set[int]
    saved: int = 0
    seen: set[int] = field(default_factory=set)
    layer0_start: int = 0
    plan: Plan | None = None

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.parameters and pointer not in self.seen:
            self.seen.add(pointer)
            self.saved += storage.nbytes()
        return tensor


class ActivationBudget:
    """Watches a model's training forwards and checkpoints layers of those whose activations would exceed
    ``budget_bytes``. Install once per model (it registers a pre-hook on every decoder layer)."""

    def __init__(self, model: torch.nn.Module, budget_bytes: int,
                 recompute_context: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"the activation budget must be > 0 bytes, got {budget_bytes}")
        self.model = model
        self.budget_bytes = int(budget_bytes)
        self.layers = decoder_layers(model)
        self.bytes_per_position: float | None = None  # of an unchecked forward, from the last watched one
        self.last: Plan | None = None
        self._active: _Pass | None = None
        self._warned = False
        function = functools.partial(checkpoint, use_reentrant=False,
                                     context_fn=lambda: (contextlib.nullcontext(), recompute_context()))
        for layer in self.layers:
            layer._gradient_checkpointing_func = function
            layer.gradient_checkpointing = False
        if self.layers:  # decided once layer 0 has run: before layer 1 is called, whichever transformers reads
            # the flag first (5.x in the wrapped forward, after pre-hooks; 4.5x in __call__, before them)
            self.layers[0].register_forward_pre_hook(self._before_first_layer)
            self.layers[0].register_forward_hook(self._after_first_layer, with_kwargs=True)

    @property
    def supported(self) -> bool:
        return len(self.layers) >= 2

    def over_budget(self, positions: int) -> bool:
        """Whether an unchecked forward over ``positions`` would exceed the budget, judged from the last watched
        forward's bytes per position (False before any has been measured)."""
        return self.bytes_per_position is not None and positions * self.bytes_per_position > self.budget_bytes

    @contextlib.contextmanager
    def watch(self, positions: int, adapt: bool = True) -> Iterator[None]:
        """Around one training forward of the trunk over ``positions`` positions. ``adapt``: may checkpoint
        layers (False where the forward cannot be checkpointed, e.g. it reuses a KV cache): measure only.

        A forward that the last measurement puts below half the budget is not watched: the hooks cost a Python
        call per saved tensor (a few % of a tiny model's update), and such a forward needs no decision."""
        if self.bytes_per_position is not None and 2 * positions * self.bytes_per_position <= self.budget_bytes:
            self.last = Plan(positions, estimate_bytes=int(positions * self.bytes_per_position))
            yield
            return
        parameters = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        state = _Pass(positions, adapt and self.supported, parameters)
        self._active = state
        try:
            with torch.autograd.graph.saved_tensors_hooks(state.pack, lambda tensor: tensor):
                yield
        finally:
            self._active = None
            for layer in self.layers:
                layer.gradient_checkpointing = False  # the backward's recompute was captured at forward time
        if state.plan is None:  # no decision taken (measure only, or too few layers): everything was kept
            state.plan = Plan(positions, estimate_bytes=state.saved)
        state.plan.measured_bytes = state.saved
        if positions > 0 and state.plan.checkpointed_layers == 0:
            self.bytes_per_position = state.saved / positions
        self.last = state.plan

    def _deciding(self, module: torch.nn.Module) -> _Pass | None:
        state = self._active
        if state is None or not state.adapt or state.plan is not None or not module.training \
                or not torch.is_grad_enabled():
            return None
        return state

    def _before_first_layer(self, module: torch.nn.Module, args: tuple) -> None:
        state = self._deciding(module)
        if state is not None:
            state.layer0_start = state.saved

    def _after_first_layer(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        state = self._deciding(module)
        if state is None:
            return
        hidden = args[0] if args else kwargs.get("hidden_states")  # a layer's input: what a checkpointed one keeps
        per_layer = state.saved - state.layer0_start
        layer_input = int(hidden.numel() * hidden.element_size()) if isinstance(hidden, torch.Tensor) else 0
        remaining = len(self.layers) - 1
        count = choose_count(state.saved, per_layer, layer_input, remaining, self.budget_bytes)
        estimate = estimated_bytes(state.saved, per_layer, layer_input, remaining, count)
        self.bytes_per_position = (state.saved + remaining * per_layer) / max(state.positions, 1)
        chosen = tuple(1 + index for index in spread(count, remaining))
        for index in chosen:
            self.layers[index].gradient_checkpointing = True
        state.plan = Plan(state.positions, estimate_bytes=estimate, checkpointed=chosen)
        if estimate > self.budget_bytes and not self._warned:
            self._warned = True
            logger.warning("a mini-batch of %d positions keeps about %d MiB of activations even with every layer "
                           "checkpointed, over the activation budget of %d MiB; use smaller mini-batches or a "
                           "larger --activation-budget-mb", state.positions, estimate // 2**20,
                           self.budget_bytes // 2**20)
