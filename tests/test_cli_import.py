"""The CLI answers help, listings and argument errors without loading torch or transformers (issue 15).

Loading torch takes 1-10 s; these commands only read definitions. Each check runs in a fresh interpreter and
reads ``sys.modules`` at exit, so a module-level ``import torch`` added anywhere on the path fails it (use
``from covgym.core.lazy import torch`` and ``if TYPE_CHECKING: from torch import Tensor`` instead).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers")

_PROBE = """
import contextlib, io, json, sys
import covgym.cli as cli
code = None
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = cli.main({argv!r}) if {argv!r} is not None else 0
    except SystemExit as exit_:
        code = exit_.code
print(json.dumps({{"code": code, "loaded": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _probe(argv: list[str] | None) -> dict:
    script = _PROBE.format(argv=argv, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv, code", [
    (None, 0),  # import covgym.cli only
    (["--help"], 0),
    (["envs"], 0),
    (["algos"], 0),
    (["algos", "--verbose"], 0),
    (["train", "--help"], 0),
    (["bench", "--help"], 0),
    (["train", "--no-such-flag", "1"], 2),
    (["train", "--steps", "zero"], 2),
    (["train", "--steps", "0"], 2),
    (["train", "--algo", "no-such-algo"], 2),
    (["train", "--env", "covgym/NoSuch-v0"], 2),
])
def test_light_commands_do_not_import_torch(argv: list[str] | None, code: int) -> None:
    result = _probe(argv)
    assert result["code"] == code
    assert result["loaded"] == [], f"covgym {' '.join(argv or ['(import)'])} imported {result['loaded']}"


def test_probe_detects_a_torch_import() -> None:
    """The probe itself can fail: a command that does load torch is reported."""
    script = _PROBE.format(argv=None, heavy=HEAVY).replace("import covgym.cli as cli", "import covgym.cli as cli\nimport torch")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1])["loaded"] == ["torch"]


def test_lazy_module_loads_on_first_use() -> None:
    script = ("import sys\nfrom covgym.core.lazy import LazyModule\nm = LazyModule('fractions')\n"
              "sys.modules.pop('fractions', None)\nbefore = 'fractions' in sys.modules\n"
              "value = m.Fraction(1, 2)\nprint(before, 'fractions' in sys.modules, value)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True", "1/2"], done.stderr
