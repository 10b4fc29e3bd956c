"""The package layout holds: no import cycles, imports only in the declared direction, public paths that work.

Each package of covgym declares ``MAY_IMPORT`` in its ``__init__.py`` (the covgym packages it may use). The
import graph is read from the source with ``ast`` (every import, including those inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency), so nothing is executed to build it.
"""

from __future__ import annotations

import ast
import graphlib
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Where each top-level package's source lives (covgym.algorithms and covgym.envs sit beside covgym/).
SOURCE_ROOTS = {"covgym": ROOT / "covgym", "covgym.algorithms": ROOT / "algorithms", "covgym.envs": ROOT / "envs"}
#: The packages a newcomer sees, lowest first (docs/architecture.md draws the same order).
PACKAGES = ("covgym.core", "covgym.distributed", "covgym.envs", "covgym.algorithms", "covgym.models",
            "covgym.measure", "covgym.train", "covgym.benchmark", "covgym.adapters")


def module_files() -> dict[str, Path]:
    """Every covgym module name -> its file."""
    modules: dict[str, Path] = {}
    for prefix, root in SOURCE_ROOTS.items():
        for path in root.rglob("*.py"):
            relative = path.relative_to(root).with_suffix("")
            parts = [part for part in relative.parts if part != "__init__"]
            name = ".".join([prefix, *parts])
            if name.split(".")[:2] in (["covgym", "algorithms"], ["covgym", "envs"]) and prefix == "covgym":
                continue  # not there; the real ones come from their own roots
            modules[name] = path
    return modules


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The covgym modules ``path`` imports: ``from a.b import c`` counts ``a.b.c`` when it is a module, else ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(path, name, set(files)) for name, path in files.items()}


def package_of(module: str) -> str:
    """The declared package holding ``module``, or ``"covgym"`` for the top-level modules (CLI, demo, testing)."""
    for package in PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return "covgym"


def declared_imports(package: str) -> tuple[str, ...]:
    """``MAY_IMPORT`` of a package, read from its ``__init__.py`` without importing it."""
    init = module_files()[package]
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "MAY_IMPORT":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{init} declares no MAY_IMPORT")


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` per failed topological sort, described ``a -> b -> a`` ([] when there is none)."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return [" -> ".join(error.args[1])]
    return []


def wrong_direction(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a package to one outside its ``MAY_IMPORT`` (the top-level modules may import anything)."""
    allowed = {package: declared_imports(package) for package in PACKAGES}
    problems = []
    for module, targets in sorted(graph.items()):
        source = package_of(module)
        if source == "covgym":
            continue
        for target in sorted(targets):
            destination = package_of(target)
            if destination != source and destination not in allowed[source]:
                problems.append(f"{module} imports {target} ({source} may import: {', '.join(allowed[source]) or '-'})")
    return problems


# --------------------------------------------------------------------------------------------------------- tests
def test_every_package_declares_what_it_may_import_and_says_what_it_owns():
    for package in PACKAGES:
        declared = declared_imports(package)
        assert all(target in PACKAGES for target in declared), (package, declared)
        docstring = ast.get_docstring(ast.parse(module_files()[package].read_text())) or ""
        assert len(docstring.split()) >= 20, f"{package}: its docstring should say what it owns"


def test_the_declared_direction_is_a_strict_order():
    """No two packages may import each other, so the declarations alone cannot allow a cycle between packages."""
    graph = {package: set(declared_imports(package)) for package in PACKAGES}
    assert cycles(graph) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_import_goes_the_declared_direction():
    assert wrong_direction(import_graph()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = import_graph()
    graph["covgym.core.batch"] = graph["covgym.core.batch"] | {"covgym.train.trainer"}
    assert any("covgym.core.batch" in cycle for cycle in cycles(graph))
    upward = "covgym.core.batch imports covgym.train.trainer"
    assert any(problem.startswith(upward) for problem in wrong_direction(graph))


def test_the_graph_reads_imports_inside_functions_and_from_imports_of_modules():
    graph = import_graph()
    assert "covgym.core.batch" in graph["covgym.algorithms.base"]  # a top-level ``from ... import``
    assert "covgym.benchmark.command" in graph["covgym.cli"]  # an import inside a function
    assert "covgym.measure.theory" in graph["covgym.testing"]  # ``from covgym.measure import theory``


def test_no_module_is_left_in_the_flat_room():
    top_level = sorted(path.name for path in (ROOT / "covgym").glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py", "batch.py", "cli.py", "demo.py", "testing.py"]


PUBLIC = [
    ("covgym.algorithms", ("get", "names", "compose", "AlgorithmCore", "Estimator", "PolicyLoss", "Control")),
    ("covgym.envs", ("SingleTurnEnv", "MultiTurnEnv", "Problem", "Grade", "ENVIRONMENTS")),
    ("covgym.envs.testing", ("check_text_env", "run_episode")),
    ("covgym.testing", ("check_algorithm",)),
    ("covgym.batch", ("RolloutBatch",)),
    ("covgym.adapters.trl", ("prompt_dataset", "reward_function")),
    ("covgym.adapters.verl", ("register_verl_policy_losses", "write_verl_dataset", "compute_score")),
    ("covgym.adapters.common", ("EnvGrader",)),
    ("covgym.cli", ("main", "build_parser")),
]


@pytest.mark.parametrize("module, names", PUBLIC, ids=[module for module, _ in PUBLIC])
def test_public_import_paths_keep_working(module, names):
    imported = importlib.import_module(module)
    missing = [name for name in names if not hasattr(imported, name)]
    assert not missing, f"{module} lost {missing}"


def test_the_public_batch_is_the_core_batch():
    from covgym.batch import RolloutBatch
    from covgym.core.batch import RolloutBatch as CoreBatch

    assert RolloutBatch is CoreBatch


def test_the_command_line_entry_points_run():
    for command in ([sys.executable, "-m", "covgym", "--help"], [sys.executable, "-m", "covgym", "train", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout
