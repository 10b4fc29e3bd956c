"""The registry: parts by kind, algorithms (presets and registered classes), and names like ``rloo+kl_cov``.

The built-in parts and presets register themselves when their modules are imported; ``load_builtins`` imports
every module of the ``estimators``, ``losses`` and ``controls`` folders and ``presets`` (a new part is one new
file, with no edit anywhere else). ``get(name)`` accepts a registered algorithm or preset name, a single part name
(completed with the default estimator ``grpo`` and loss ``ppo_clip``), or parts (and presets) joined by ``+``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from covgym.algorithms.base import AlgorithmCore
from covgym.algorithms.parts import KINDS, Part

_ALGORITHMS: dict[str, type[AlgorithmCore]] = {}
_PARTS: dict[str, dict[str, type[Part]]] = {kind: {} for kind in KINDS}
_PRESET_RECIPES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}
_COMPOSED: dict[str, type[AlgorithmCore]] = {}
_PACKAGES = ("estimators", "losses", "controls")
_loaded = False

DEFAULT_ESTIMATOR = "grpo"
DEFAULT_LOSS = "ppo_clip"


def load_builtins() -> None:
    """Import every built-in part module and the presets (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    here = Path(__file__).parent
    for package in _PACKAGES:
        for module in sorted(pkgutil.iter_modules([str(here / package)]), key=lambda m: m.name):
            importlib.import_module(f"covgym.algorithms.{package}.{module.name}")
    importlib.import_module("covgym.algorithms.presets")


def register(cls: type) -> type:
    """Class decorator: list an algorithm (an ``AlgorithmCore`` subclass) or a part under ``cls.name``."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name` to be registered")
    if "+" in cls.name:
        raise ValueError(f"{cls.__name__}: a registered name cannot contain '+', got {cls.name!r}")
    if isinstance(cls, type) and issubclass(cls, Part):
        if cls.kind not in KINDS:
            raise ValueError(f"{cls.__name__}.kind must be one of {', '.join(KINDS)}, got {cls.kind!r}")
        for kind, table in _PARTS.items():
            if cls.name in table and table[cls.name] is not cls:
                raise ValueError(f"part name {cls.name!r} is already registered by {table[cls.name].__name__} "
                                 f"({kind})")
        _PARTS[cls.kind][cls.name] = cls
        _COMPOSED.clear()
        return cls
    if not (isinstance(cls, type) and issubclass(cls, AlgorithmCore)):
        raise TypeError(f"register expects an algorithm or part class, got {cls!r}")
    if cls.name in _ALGORITHMS and _ALGORITHMS[cls.name] is not cls:
        raise ValueError(f"algorithm name {cls.name!r} is already registered by {_ALGORITHMS[cls.name].__name__}")
    _ALGORITHMS[cls.name] = cls
    return cls


def register_preset(name: str, parts: tuple[str, ...], defaults: dict[str, Any] | None = None,
                    description: str = "", source: str = "", class_name: str | None = None) -> type[AlgorithmCore]:
    """Register ``name`` as the composition of ``parts`` (part names) with ``defaults`` overriding theirs."""
    _PRESET_RECIPES[name] = (tuple(parts), dict(defaults or {}))
    cls = _build(name, list(parts), dict(defaults or {}), description, source, class_name)
    return register(cls)


def names() -> list[str]:
    """Registered algorithm and preset names, sorted (parts: ``part_names``; any ``a+b`` also works)."""
    load_builtins()
    return sorted(_ALGORITHMS)


def part_names(kind: str | None = None) -> list[str]:
    """Registered part names of one kind (``estimator``, ``loss``, ``control``) or of all kinds, sorted."""
    load_builtins()
    kinds = KINDS if kind is None else (kind,)
    return sorted(name for k in kinds for name in _PARTS[k])


def part(name: str) -> type[Part]:
    """The part class registered as ``name``; an unknown name lists the known parts."""
    load_builtins()
    for table in _PARTS.values():
        if name in table:
            return table[name]
    raise KeyError(f"unknown part {name!r}; known parts: {', '.join(part_names())}")


def preset_parts(name: str) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """``(part names, default overrides)`` of a preset, or None for a name that is not a preset."""
    load_builtins()
    return _PRESET_RECIPES.get(name)


def get(name: str) -> type[AlgorithmCore]:
    """The algorithm class for ``name`` (a registered name, a part name, or ``+``-joined parts and presets).

    The result is called with the parts' hyperparameters as keyword arguments. An unknown name lists the known
    algorithms and parts (``KeyError``); a composition that cannot be built says why (``KeyError``).
    """
    load_builtins()
    if name in _ALGORITHMS:
        return _ALGORITHMS[name]
    if name in _COMPOSED:
        return _COMPOSED[name]
    tokens = [token.strip() for token in name.split("+")]
    known = {n for table in _PARTS.values() for n in table} | set(_PRESET_RECIPES)
    if not all(tokens) or any(token not in known for token in tokens):
        bad = [token for token in tokens if token not in known] or [name]
        raise KeyError(f"unknown algorithm {bad[0]!r}; known: {', '.join(names())}; or parts joined by '+': "
                       f"{', '.join(part_names())}")
    try:
        cls = _build(name, tokens, {})
    except ValueError as error:
        raise KeyError(f"--algo {name}: {error}") from None
    _COMPOSED[name] = cls
    return cls


def _build(name: str, tokens: list[str], defaults: dict[str, Any], description: str = "", source: str = "",
           class_name: str | None = None) -> type[AlgorithmCore]:
    """Resolve tokens (part names; a preset expands to its parts and defaults) into a composition class."""
    from covgym.algorithms.composition import compose

    chosen: dict[str, list[type[Part]]] = {kind: [] for kind in KINDS}
    merged_defaults: dict[str, Any] = {}
    for token in tokens:
        found = next((table[token] for table in _PARTS.values() if token in table), None)
        if found is not None:
            if found in chosen[found.kind]:
                raise ValueError(f"part {token!r} is given twice")
            chosen[found.kind].append(found)
            continue
        preset_tokens, preset_defaults = _PRESET_RECIPES[token]
        for inner in preset_tokens:
            inner_part = part(inner)
            if inner_part not in chosen[inner_part.kind]:
                chosen[inner_part.kind].append(inner_part)
        merged_defaults.update(preset_defaults)
    merged_defaults.update(defaults)
    for kind in ("estimator", "loss"):
        if len(chosen[kind]) > 1:
            raise ValueError(f"one {kind} per algorithm, got {', '.join(p.name for p in chosen[kind])}")
    estimator = chosen["estimator"][0] if chosen["estimator"] else _PARTS["estimator"][DEFAULT_ESTIMATOR]
    loss = chosen["loss"][0] if chosen["loss"] else _PARTS["loss"][DEFAULT_LOSS]
    present = {f.name for p in (estimator, loss, *chosen["control"]) for f in dataclasses.fields(p)}
    merged_defaults = {k: v for k, v in merged_defaults.items()
                       if k in present or k in {f.name for f in dataclasses.fields(AlgorithmCore)}}
    return compose(name, estimator, loss, tuple(chosen["control"]), merged_defaults, description, source, class_name)


# ---------------------------------------------------------------------------------------------- hyperparameters
def readers() -> dict[str, list[str]]:
    """Hyperparameter name -> the parts and one-class algorithms that read it (every algorithm reads the core)."""
    load_builtins()
    found: dict[str, list[str]] = {}
    for table in _PARTS.values():
        for part_name, cls in sorted(table.items()):
            for f in dataclasses.fields(cls):
                found.setdefault(f.name, []).append(part_name)
    for algo_name, cls in sorted(_ALGORITHMS.items()):
        if not hasattr(cls, "estimator_class"):  # a one-class algorithm reads all its fields
            for f in dataclasses.fields(cls):
                found.setdefault(f.name, []).append(algo_name)
    return found


def hyperparameter_index() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Hyperparameter name -> (a field declaring it, who reads it): what the CLI builds its flags from."""
    load_builtins()
    fields: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(AlgorithmCore)}
    for table in _PARTS.values():
        for cls in table.values():
            for f in dataclasses.fields(cls):
                fields.setdefault(f.name, f)
    for cls in _ALGORITHMS.values():
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, f)
    who = readers()
    return {name: (f, who.get(name, ["every algorithm"])) for name, f in fields.items()}


def unread_hyperparameters(name: str, keys, flag=lambda key: key) -> str | None:
    """A one-line error for the ``keys`` that no part of algorithm ``name`` reads, or None when all are read.

    ``flag`` renders a key (``--clip-ratio`` on the command line, ``clip_ratio`` in a config file).
    """
    cls = get(name)
    mine = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(set(keys) - mine)
    if not stray:
        return None
    who = readers()
    parts = " + ".join(p.name for p in (getattr(cls, "estimator_class", None), getattr(cls, "loss_class", None),
                                       *getattr(cls, "control_classes", ())) if p is not None)
    described = f"{name} ({parts})" if parts and parts != name else name
    pieces = []
    for key in stray:
        owners = who.get(key)
        pieces.append(f"{flag(key)} is read by {', '.join(owners)}" if owners else f"{flag(key)} is read by nothing")
    return f"{', '.join(flag(key) for key in stray)} not read by --algo {described}: " + "; ".join(pieces)
