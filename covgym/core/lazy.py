"""Deferred imports: the CLI's help, listings and argument errors answer without loading torch.

Loading torch takes 1 s on a quiet machine and up to 10 s on a busy one, yet ``covgym --help``,
``covgym algos`` and ``covgym train --help`` only read definitions (config fields, algorithm hyperparameters).
Modules whose definitions the CLI reads therefore write ``from covgym.core.lazy import torch``: the name behaves as
the torch module and loads it at the first attribute access (``torch.zeros``, ``torch.Tensor``), i.e. when work
starts. Tensor types in annotations come from ``if TYPE_CHECKING: from torch import Tensor`` (annotations are
strings under ``from __future__ import annotations``). ``tests/test_cli_import.py`` guards this.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for module ``name`` that imports it on first attribute access and caches what it reads."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> types.ModuleType:
        target = self.__dict__["_lazy_target"]
        if target is None:
            target = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = target
        return target

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._load(), attribute)
        self.__dict__[attribute] = value  # later reads are plain attribute reads
        return value

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_lazy_target"] is not None else "not loaded yet"
        return f"<lazy module {self.__name__!r} ({state})>"


torch: Any = LazyModule("torch")
torch_distributed: Any = LazyModule("torch.distributed")
