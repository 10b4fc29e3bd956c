"""What covgym's verl adapters share: the registry prefix, finding verl, reading its configs, rank-local collectives.

Kept apart from ``covgym.adapters.verl`` so that the policy-loss adapter and the advantage-estimator adapter
(``covgym.adapters.verl_estimators``) can both use it without importing each other.
"""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

PREFIX = "covgym_"
CORE_ALGOS = "verl.trainer.ppo.core_algos"
INSTALL_HINT = "install verl separately (pip install verl, see verl's install guide); covgym does not pull it in"
#: "not set" for ``lookup`` (None is a value verl's configs hold)
MISSING = object()


def core_algos() -> Any:
    """``verl.trainer.ppo.core_algos`` (where verl keeps its loss and estimator registries), or an ImportError
    that says how to install verl."""
    try:
        return importlib.import_module(CORE_ALGOS)
    except ImportError as error:
        raise ImportError(f"covgym.adapters.verl needs verl ({error}); {INSTALL_HINT}") from None


def lookup(config: Any, name: str) -> Any:
    """``config.<name>`` or ``config[name]`` (dataclass, OmegaConf or dict alike); ``MISSING`` when absent."""
    if config is None or config is MISSING:
        return MISSING
    value = getattr(config, name, MISSING)
    if value is MISSING and callable(getattr(config, "get", None)):
        try:
            value = config.get(name, MISSING)
        except Exception:  # noqa: BLE001 - a strict config that refuses unknown keys means "absent"
            value = MISSING
    return value


def from_config(sources: list[Any], fields: set[str]) -> dict[str, Any]:
    """The ``fields`` the first of ``sources`` (configs, most specific first) to set them give; unset ones left out."""
    found = {}
    for field in sorted(fields):
        for source in sources:
            value = lookup(source, field)
            if value is not MISSING and value is not None:
                found[field] = value
                break
    return found


def process_rank() -> int:
    """This process's torch.distributed rank (``RANK`` before the group exists)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


@contextmanager
def rank_local_selection() -> Iterator[None]:
    """Make covgym's collectives (token counts, covariance means, top-k gathers, batch statistics) local.

    Inside verl, torch.distributed spans all workers, but the losses are called per micro-batch and ranks need not
    call them equally often, so a collective there could hang; the selection is per micro-batch, as in verl.
    Advantages are computed on verl's driver, which holds the whole batch, so no collective is needed there either.
    """
    from covgym.algorithms import distributed

    if distributed.world_size() == 1:
        yield
        return
    original = distributed.world_size
    distributed.world_size = lambda: 1
    try:
        yield
    finally:
        distributed.world_size = original
