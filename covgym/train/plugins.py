"""User code that extends covgym: ``--plugin`` modules and files, and installed packages' entry points.

A plugin is ordinary Python that registers things the way covgym's own modules do:
``gymnasium.register(id="my/Task-v0", entry_point=...)`` for an environment, ``@covgym.algorithms.register`` for an
algorithm. covgym imports it *before* any name is resolved, so the command line, config files and
``config.json`` can name what it registers. Three ways in:

- ``--plugin MODULE_OR_FILE.py`` (repeatable) on every command, or ``plugins: [...]`` in a config file. A run
  records its plugins in ``config.json`` (files as absolute paths) so that ``--resume`` imports them again.
- An installed distribution declares entry points in the groups ``covgym.envs`` or ``covgym.algorithms``; the
  CLI loads them all at start. An entry point naming a module is imported; one naming a function is called with
  no arguments; one naming an algorithm class is registered.
- Python code simply imports its module before calling covgym.

Loading is idempotent: a module or file already loaded is not executed again (re-executing would register the
same names twice).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterable

ENTRY_POINT_GROUPS = ("covgym.envs", "covgym.algorithms")

#: resolved plugin spec (absolute file path or module name) -> the loaded module
_LOADED: dict[str, ModuleType] = {}
_ENTRY_POINTS_LOADED: set[tuple[str, str]] = set()


class PluginError(ValueError):
    """A plugin cannot be found or fails while importing; the message is one line naming it."""


def is_file_spec(spec: str) -> bool:
    """A path to a ``.py`` file (anything ending in ``.py`` or containing a path separator), not a module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve(spec: str, base: str | Path | None = None) -> str:
    """The form recorded in ``config.json``: a file as an absolute path (relative to ``base`` or the working
    directory), a module name unchanged. Resolving is what lets ``--resume`` run from another directory."""
    spec = str(spec).strip()
    if not spec:
        raise PluginError("empty --plugin value: give a module name or a path to a .py file")
    if not is_file_spec(spec):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path.resolve())


def _location(error: BaseException) -> str:
    """``file:line`` of the innermost frame of ``error`` (or of a SyntaxError's own position)."""
    if isinstance(error, SyntaxError) and error.filename:
        return f" ({error.filename}:{error.lineno})"
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return f" ({traceback.tb_frame.f_code.co_filename}:{traceback.tb_lineno})" if traceback else ""


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist" if not path.exists()
                          else f"plugin {str(path)!r} is not a file")
    # A unique module name per file, so that two plugins both called mine.py do not replace each other.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"covgym_plugin_{''.join(c if c.isalnum() else '_' for c in path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plugin {str(path)!r}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up by their module's name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugin(spec: str, base: str | Path | None = None) -> ModuleType:
    """Import one plugin (a module name or a ``.py`` path) once; any failure is a one-line ``PluginError``."""
    key = resolve(spec, base)
    if key in _LOADED:
        return _LOADED[key]
    try:
        if is_file_spec(key):
            module = _import_file(Path(key))
        else:
            module = importlib.import_module(key)
    except PluginError:
        raise
    except ModuleNotFoundError as error:
        if error.name and (key == error.name or key.startswith(error.name + ".")):
            raise PluginError(f"plugin {key!r}: no module named {error.name!r} (give an importable module name "
                              f"or a path to a .py file, e.g. ./{key.split('.')[-1]}.py)") from error
        raise PluginError(f"plugin {key!r} failed to import: {error}{_location(error)}") from error
    except Exception as error:  # noqa: BLE001 - user code may raise anything; report it in one line
        message = str(error).splitlines()[0] if str(error) else ""
        raise PluginError(f"plugin {key!r} failed to import: {type(error).__name__}: {message}"
                          f"{_location(error)}") from error
    _LOADED[key] = module
    return module


def load_plugins(specs: Iterable[str], base: str | Path | None = None) -> list[ModuleType]:
    """Import each plugin in order (see ``load_plugin``)."""
    return [load_plugin(spec, base) for spec in specs]


def load_entry_points(groups: Iterable[str] = ENTRY_POINT_GROUPS) -> list[str]:
    """Load installed distributions' entry points of ``groups``; returns the names loaded.

    One broken installed package must not make covgym unusable, so a failing entry point is a one-line
    warning naming it, not an error.
    """
    from importlib.metadata import entry_points

    loaded = []
    for group in groups:
        for entry_point in entry_points(group=group):
            key = (group, entry_point.value)
            if key in _ENTRY_POINTS_LOADED:
                continue
            _ENTRY_POINTS_LOADED.add(key)
            try:
                target = entry_point.load()
                if isinstance(target, type):
                    if group == "covgym.algorithms":
                        import covgym.algorithms as algorithms

                        if target.name not in algorithms.names():
                            algorithms.register(target)
                elif callable(target):
                    target()
            except Exception as error:  # noqa: BLE001 - see the docstring
                warnings.warn(f"entry point {entry_point.name!r} ({entry_point.value}) of group {group!r} failed "
                              f"to load: {type(error).__name__}: {error}", stacklevel=2)
                continue
            loaded.append(entry_point.name)
    return loaded
