"""Grouped-query attention on CPU without copying keys and values for every query head.

``transformers``' SDPA attention passes ``enable_gqa`` to torch only when there is no attention mask; with one (any
padded or packed batch) it first repeats each key/value head to the number of query heads, and autograd keeps those
copies for the backward pass. For SmolLM2-135M (9 query heads, 3 key/value heads) a masked 8 × 267 training
forward then held 3.6 GB of activations against 2.9 GB without the copies, at the same speed: torch's CPU flash
kernel takes grouped heads and a mask together. ``transformers`` reads ``TRANSFORMERS_SDPA_FORCE_GQA`` at every
attention call to skip the copies; covgym sets it around its own forward passes on CPU only (on CUDA a mask with
grouped heads would leave the fast kernels), and not under activation checkpointing: the backward pass recomputes
checkpointed layers outside the block, and the recompute must see the shapes the forward saw (it then copies, as
the forward did; checkpointing keeps no per-layer activations anyway). Where a release no longer reads the
variable, this does nothing.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

_VARIABLE = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextlib.contextmanager
def grouped_heads_without_copies(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Within the block, SDPA attention on ``device`` (CPU only) runs grouped heads without repeating them."""
    if not enabled or device.type != "cpu" or os.environ.get(_VARIABLE) is not None:  # a user's setting wins
        yield
        return
    os.environ[_VARIABLE] = "1"
    try:
        yield
    finally:
        os.environ.pop(_VARIABLE, None)
