"""The run-directory policy: a run never lands silently on top of another one.

- A new run needs a missing or empty directory.
- ``resume`` continues the run already there, and only with the configuration it was started with (the keys in
  ``RESUMABLE_KEYS``, which change how long or how verbosely a run goes but not what it computes, may differ).
- ``overwrite`` clears a previous run first; a directory that holds no covgym run is never cleared.
- A path that is a file is refused.

Every refusal is a ``RunDirError`` (a ``ConfigError``: one line, exit code 2 on the command line) that says what to
do instead. Checks read only; ``clear_run_dir`` is the one function here that deletes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from covgym.train.config import ConfigError, TrainConfig

#: Flattened config keys that ``--resume`` may change: they decide how far a run goes and what it reports, not
#: the computation of the steps it shares with the original (``run_dir``: the directory may have been moved).
RESUMABLE_KEYS = frozenset({"steps", "progress", "save_every", "keep_checkpoints", "eval_every", "model.device",
                            "run_dir", "samples_per_step", "samples_every", "samples_max_mb",
                            "dead_signal_steps"})
#: What a covgym run leaves in its directory; one of them marks a directory ``--overwrite`` may clear.
RUN_MARKERS = ("config.json", "metrics.jsonl", "checkpoints", "final_model")
_OPAQUE = ("algo_params", "env_kwargs")  # compared as whole values


class RunDirError(ConfigError):
    """The run directory cannot be used as asked; the message says why and what to do."""


def flat_config(tree: dict[str, Any], prefix: str = "", opaque: Iterable[str] = _OPAQUE) -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (the ``opaque`` keys, by default ``algo_params`` and
    ``env_kwargs``, stay whole)."""
    items: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in opaque:
            items.update(flat_config(value, f"{prefix}{key}.", opaque))
        else:
            items[prefix + key] = value
    return items


def config_differences(stored: dict[str, Any], wanted: dict[str, Any], ignored: Iterable[str] = ()
                       ) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, wanted value)`` for every flattened key whose values differ, ``ignored`` left out.

    A key the stored config lacks (a run written by an older covgym) counts as holding its default.
    """
    have, want = flat_config(stored), flat_config(wanted)
    defaults = flat_config(TrainConfig().to_dict())
    skip = set(ignored)
    return [(key, have.get(key, defaults.get(key)), want.get(key)) for key in sorted(set(have) | set(want))
            if key not in skip and have.get(key, defaults.get(key)) != want.get(key)]


def stored_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``config.json`` of ``run_dir``, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def check_same_config(run_dir: str | Path, wanted: dict[str, Any], ignored: Iterable[str] = RESUMABLE_KEYS,
                      hint: str = "resume it with its own config, or train into another --run-dir") -> None:
    """Refuse when ``run_dir`` holds a run whose resolved config differs from ``wanted`` outside ``ignored``.

    ``wanted`` is a resolved config as a dict (``resolve_config(config).to_dict()``), the form runs store.
    """
    stored = stored_config(run_dir)
    if stored is None:
        return
    differing = config_differences(stored, wanted, ignored)
    if differing:
        shown = ", ".join(f"{key}: {old!r} there, {new!r} here" for key, old, new in differing[:4])
        more = f" and {len(differing) - 4} more" if len(differing) > 4 else ""
        raise RunDirError(f"{run_dir} holds a run with a different config ({shown}{more}); {hint}")


def check_partial_config(run_dir: str | Path, given: dict[str, Any], source: str) -> None:
    """Refuse a partial config (e.g. a ``--config`` file given with ``--resume``) that sets any key to another
    value than the run in ``run_dir`` has; ``RESUMABLE_KEYS`` and ``plugins`` aside. Keys it leaves out are not
    compared (they are the run's own)."""
    from covgym.train.config import nest_flat_keys

    stored = stored_config(run_dir)
    if stored is None:
        return
    have = flat_config(stored, opaque=())
    defaults = flat_config(TrainConfig().to_dict(), opaque=())
    differing = [(key, have.get(key, defaults.get(key)), value)
                 for key, value in flat_config(nest_flat_keys(given), opaque=()).items()
                 if key not in RESUMABLE_KEYS and key != "plugins" and have.get(key, defaults.get(key)) != value]
    if differing:
        shown = ", ".join(f"{key}: {old!r} in the run, {new!r} in {source}" for key, old, new in differing[:4])
        raise RunDirError(f"{source} is not the config of the run in {run_dir} ({shown}); --resume continues a "
                          f"run with its own config")


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding something a covgym run writes."""
    path = Path(path)
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def is_taken(path: str | Path) -> bool:
    """Whether a new run may not start at ``path``: it is a file, or a directory with anything in it."""
    path = Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_run_dir(run_dir: str | Path, wanted: dict[str, Any] | None = None, *, resume: bool = False,
                  overwrite: bool = False) -> None:
    """Refuse, before anything is written, a run directory that the run would silently damage.

    Args:
        run_dir: the run's directory.
        wanted: the run's resolved config as a dict; with ``resume``, compared with the stored one.
        resume: continue the run in ``run_dir`` (same config, except ``RESUMABLE_KEYS``).
        overwrite: the caller will clear ``run_dir`` (``clear_run_dir``) before writing.
    """
    path = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other: resume continues the run in the "
                          "directory, overwrite deletes it; choose one")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} is a file; choose another --run-dir")
    if resume:
        if is_taken(path) and not is_run_dir(path):
            raise RunDirError(f"{str(path)!r} holds no covgym run to resume; choose the run's own directory")
        if wanted is not None:
            check_same_config(path, wanted)
        return
    if not is_taken(path):
        return
    if not overwrite:
        raise RunDirError(f"run directory {str(path)!r} is not empty; continue its run with --resume {path}, "
                          f"replace it with --overwrite, or choose another --run-dir")
    if not is_run_dir(path):
        raise RunDirError(f"{str(path)!r} is not empty and holds no covgym run, so --overwrite will not clear it; "
                          f"choose another --run-dir")


def clear_run_dir(run_dir: str | Path) -> None:
    """Delete a previous run in ``run_dir`` (``--overwrite``), after ``check_run_dir`` allowed it."""
    path = Path(run_dir)
    if not is_taken(path):
        return
    if not is_run_dir(path):  # checked before; checked again because this deletes
        raise RunDirError(f"{str(path)!r} holds no covgym run; refusing to clear it")
    shutil.rmtree(path)
