"""Compare like with like: what every method of one comparison must share, and where runs differ.

A comparison of methods is fair when the runs share everything but the algorithm and its own hyperparameters:
model, environment and its kwargs, learning rate and schedule, prompts and samples per step, mini-batches and
epochs (the update budget), response length, evaluation. ``covgym bench`` refuses a sweep that breaks this;
``covgym plot`` of hand-made runs says which settings differ, on stdout and on the figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Keys of a run config that may differ between the runs of one comparison.
PER_RUN_KEYS = ("algo", "algo_params", "run_dir", "seed", "progress", "save_every", "keep_checkpoints",
                "tensorboard", "plugins")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("algo_params", "env_kwargs"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def shared_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved run config (``config.json``) without the keys a method or a run may set for itself."""
    return {key: value for key, value in _flatten(config).items() if key.split(".")[-1] not in PER_RUN_KEYS}


def differing_settings(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{setting: {run: value}}`` for every shared setting on which the given runs disagree."""
    flat = {name: shared_settings(config) for name, config in configs.items()}
    keys = sorted({key for settings in flat.values() for key in settings})
    result = {}
    for key in keys:
        values = {name: settings.get(key) for name, settings in flat.items()}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            result[key] = values
    return result


def run_configs(run_dirs: list[str | Path]) -> dict[str, dict[str, Any]]:
    """The ``config.json`` of each run directory that has one (keyed by the directory as given)."""
    configs = {}
    for run_dir in run_dirs:
        path = Path(run_dir) / "config.json"
        try:
            configs[str(run_dir)] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return configs


def unfair_comparison_note(run_dirs: list[str | Path]) -> str | None:
    """One line naming the settings (update budget, data, model …) on which runs to be overlaid differ."""
    differing = differing_settings(run_configs(run_dirs))
    if not differing:
        return None
    parts = []
    for key, values in differing.items():
        shown = ", ".join(f"{Path(run).name}={value}" for run, value in values.items())
        parts.append(f"{key} ({shown})")
    return "not a like-for-like comparison: the runs differ in " + "; ".join(parts)
