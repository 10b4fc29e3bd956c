"""GGUF checkpoints as ordinary model directories: de-quantise once, cache, and load the cache afterwards.

``transformers`` reads a GGUF file (``from_pretrained(dir, gguf_file=name)``) by de-quantising every tensor to
float, which takes 10-20 s for a 135 M model, and the model it returns keeps a GGUF quantizer attached:
``save_pretrained`` refuses it, so a run could train it but never write its final model or checkpoint it as a
model directory. Here the weights are copied once into a plain model built from the same config (without the
quantization entry) and saved with the tokenizer (chat template included) into covgym's cache, keyed by the
file's name and size, so every later run loads an ordinary directory in seconds.

The cache stores bfloat16 weights (half the disk of float32). That rounding is far below the 4-bit
quantisation error already in the file; runs still train in whatever ``dtype`` they ask for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from covgym.models.tiny_model import cache_root

CACHE_VERSION = 1  # bump when the conversion changes, so older cached directories are not reused
CACHE_DTYPE = torch.bfloat16
MARKER = "covgym_gguf.json"  # written last into the staging directory: its presence means the cache is complete
GGUF_INSTALL = "pip install gguf accelerate"  # the packages of the gguf extra: pip install "covgym[gguf]"
GGUF_PACKAGES = ("gguf", "accelerate")  # transformers reads GGUF with gguf and refuses to without accelerate


def cache_dir(gguf_path: str | Path) -> Path:
    """Where the de-quantised copy of ``gguf_path`` lives: ``<cache>/models/<stem>-<key>``."""
    path = Path(gguf_path)
    payload = json.dumps({"name": path.name, "size": path.stat().st_size, "version": CACHE_VERSION,
                          "dtype": str(CACHE_DTYPE)}, sort_keys=True)
    key = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{path.stem}-{key}"


def require_gguf_package(install: str = GGUF_INSTALL) -> None:
    """``transformers`` needs ``gguf`` and ``accelerate`` to read GGUF files; say how to get them."""
    missing = [name for name in GGUF_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        names = " and ".join(repr(name) for name in missing)
        raise ValueError(f"model: reading a .gguf file needs the {names} package{'s' if len(missing) > 1 else ''}, "
                         f"which {'are' if len(missing) > 1 else 'is'} not installed: {install}")


def dequantized_model_dir(gguf_path: str | Path, show_progress: bool = True, install: str = GGUF_INSTALL) -> Path:
    """A plain Hugging Face model directory holding ``gguf_path``'s weights, converted on first use.

    ``install`` is the command the error message gives when the ``gguf`` package is missing. Written to a
    temporary directory beside the target and renamed into place, so an interrupted conversion
    never leaves a half-written model, and two processes converting at once both end with one good copy.
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise ValueError(f"model: GGUF file {str(path)!r} does not exist")
    target = cache_dir(path)
    if (target / MARKER).exists():
        return target
    require_gguf_package(install)
    target.parent.mkdir(parents=True, exist_ok=True)
    if show_progress:
        print(f"covgym: de-quantising {path.name} once into {target} (later runs load it directly)",
              file=sys.stderr)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert(path, staging)
        (staging / MARKER).write_text(json.dumps({"source": str(path), "size": path.stat().st_size,
                                                  "version": CACHE_VERSION, "dtype": str(CACHE_DTYPE)}, indent=2))
        try:
            staging.rename(target)
        except OSError:  # another process finished first (or an incomplete leftover): keep a complete one
            if not (target / MARKER).exists():
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf_path: Path, directory: Path) -> None:
    """Load the GGUF file, copy its float weights into an unquantised model, and save model + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=CACHE_DTYPE)
    state = {key: value.to(CACHE_DTYPE) for key, value in loaded.state_dict().items()}
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - _tied_keys(plain):
        raise ValueError(f"model: GGUF file {gguf_path.name!r} does not match its own config "
                         f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _tied_keys(model) -> set[str]:
    """State-dict keys that are tied to another parameter (e.g. ``lm_head.weight``) and so may be absent."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    head = model.get_output_embeddings()
    return {f"{name}.weight" for name, module in model.named_modules() if module is head}
