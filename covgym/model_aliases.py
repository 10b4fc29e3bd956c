"""Named models beyond the built-in tiny one: alias -> function returning a loadable ``ModelSource``.

Each entry resolves lazily (a package may need to be found or a file de-quantised on first use).
"""

from __future__ import annotations

from typing import Callable

from covgym.model_sources import ModelSource

ALIASES: dict[str, Callable[[bool], ModelSource]] = {}
