"""Installs: the wheel carries covgym.algorithms/covgym.envs (and data), and imports work from anywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = ("import covgym, covgym.algorithms as a, covgym.envs as e, gymnasium as g; "
           "assert 'grpo' in a.names(); g.make('covgym/Arithmetic-v0'); print(covgym.__file__)")


def test_imports_work_from_outside_the_repository(tmp_path):
    result = subprocess.run([sys.executable, "-c", IMPORTS], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_bare_top_level_algorithms_or_envs_package_is_installed(tmp_path):
    result = subprocess.run([sys.executable, "-c", "import algorithms"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0


@pytest.mark.slow
def test_regular_wheel_install_carries_the_mapped_packages(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("covgym-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("covgym/algorithms/presets.py", "covgym/algorithms/estimators/grpo.py",
                     "covgym/algorithms/losses/kl_cov.py", "covgym/algorithms/controls/entropy_bonus.py",
                     "covgym/envs/arithmetic.py",
                     "covgym/envs/data/gsm8k_sample.jsonl", "covgym/train/trainer.py", "covgym/adapters/verl.py"):
        assert expected in names, expected
    packages = [f"covgym/{path.relative_to(ROOT / 'covgym').as_posix()}"
                for path in (ROOT / "covgym").rglob("__init__.py")]
    assert [package for package in packages if package not in names] == []  # every subpackage of covgym/ ships
    assert not any(name.startswith(("algorithms/", "envs/")) for name in names)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    result = subprocess.run([sys.executable, "-c", IMPORTS], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert str(target) in result.stdout  # the installed copy, not the source tree


def _extra(name: str) -> dict[str, "Requirement"]:
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {Requirement(text).name: Requirement(text) for text in extras[name]}


def test_the_gguf_extra_installs_what_transformers_needs_to_load_a_gguf_file():
    """``pip install covgym[gguf]`` must load a .gguf model: transformers reads it with ``gguf`` (at least its
    GGUF_MIN_VERSION) and refuses to load it without ``accelerate``."""
    import inspect

    import transformers.modeling_utils
    from packaging.version import Version
    from transformers.utils import import_utils

    from covgym.models.gguf import GGUF_PACKAGES

    extra = _extra("gguf")
    assert "gguf" in extra
    minimum = Version(import_utils.GGUF_MIN_VERSION)
    assert extra["gguf"].specifier.contains(minimum)
    assert not extra["gguf"].specifier.contains(Version(f"{minimum.major}.{minimum.minor - 1}.0")), \
        "the extra must not allow a gguf older than transformers accepts"
    if "accelerate is required when loading a GGUF" in inspect.getsource(transformers.modeling_utils):
        assert "accelerate" in extra
    assert set(GGUF_PACKAGES) <= set(extra)  # what covgym checks for at run time, the extra installs
