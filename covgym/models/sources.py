"""Where a model comes from: the built-in alias, a local directory, a GGUF file, or a hub id.

``resolve_model`` turns what a user typed into a path (and loading keyword arguments) that
``from_pretrained`` understands, and fails early with a message that says how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

from covgym.models.aliases import ALIASES, ModelSource
from covgym.models.tiny_model import DIGITS_MODEL_ALIAS, DIGITS_MODEL_SPEC, TINY_MODEL_ALIAS, ensure_tiny_model


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model(name_or_path: str, show_progress: bool = True) -> ModelSource:
    """Resolve a model name; raises ``ValueError`` with a fix when it cannot be found."""
    if not name_or_path:
        raise ValueError("model must be a non-empty name or path (default: 'tiny')")
    if name_or_path == TINY_MODEL_ALIAS:
        return ModelSource(str(ensure_tiny_model(show_progress=show_progress)), description="built-in tiny model")
    if name_or_path == DIGITS_MODEL_ALIAS:
        return ModelSource(str(ensure_tiny_model(DIGITS_MODEL_SPEC, show_progress=show_progress)),
                           description="built-in tiny model of the mechanism testbed (DigitSum)")
    if name_or_path in ALIASES:
        return ALIASES[name_or_path](show_progress)
    path = Path(os.path.expanduser(name_or_path))
    if path.is_file() and path.suffix == ".gguf":  # de-quantised once into a cached, saveable model directory
        from covgym.models.gguf import dequantized_model_dir

        directory = dequantized_model_dir(path, show_progress=show_progress)
        return ModelSource(str(directory), description=f"GGUF file {path.name} (de-quantised)")
    if path.is_dir():
        if (path / "metrics.jsonl").exists() or (path / "final_model").is_dir():  # a run's config.json is no model's
            final = path / "final_model"
            hint = (f"did you mean {str(final)!r}?" if final.is_dir()
                    else "its final_model/ is written when the run finishes; resume it first with --resume")
            raise ValueError(f"model {str(path)!r} is a covgym run directory, not a model; {hint}")
        if not (path / "config.json").exists():
            raise ValueError(f"model directory {str(path)!r} has no config.json: is it a Hugging Face model "
                             f"directory (save_pretrained output)?")
        return ModelSource(str(path), description="local directory")
    if path.exists():
        raise ValueError(f"model path {str(path)!r} is neither a model directory nor a .gguf file")
    if _looks_like_hub_id(name_or_path):
        return ModelSource(name_or_path, description="hub id")
    known = ", ".join([TINY_MODEL_ALIAS, DIGITS_MODEL_ALIAS, *sorted(ALIASES)])
    raise ValueError(f"model {name_or_path!r} not found: not a local path, not a hub id (owner/name), "
                     f"not an alias ({known})")
