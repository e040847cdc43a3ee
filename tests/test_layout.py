"""The layout's rules, checked: small modules and functions, argparse only in the CLI,
run-folder file names spelled only by their owner, imports that point only inward
(cli -> integrations -> ssl, evaluation -> core) with no cycles, and the core free of
training frameworks.

Imports are read from the source (``ast``), everywhere in a module: at the top, inside
functions, under ``if TYPE_CHECKING:``, and the module names a lazy loader hands to
``importlib.import_module``. An import inside a function is still a dependency; it only
runs later.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dse_tune"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
FRAMEWORKS = ("lightning", "pytorch_lightning", "ray", "optuna")

#: Layers, outermost first. A module may import its own layer and the layers after it.
#: Everything not listed (metrics/, checkpoints/, data.py, runs.py, ... every other
#: top-level module) is the core.
LAYERS = {
    "dse_tune.cli": 3,
    "dse_tune.integrations": 2,
    "dse_tune.ssl": 1,
    "dse_tune.evaluation": 1,
}
CORE = 0
LAYER_NAMES = {3: "cli", 2: "integrations", 1: "ssl/evaluation", CORE: "core"}


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in SOURCES}


def _layer(module: str) -> int:
    if module == "dse_tune.__main__":
        return LAYERS["dse_tune.cli"]  # the console entry point
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return CORE


def _owner(name: str) -> str | None:
    """The dse_tune module that ``name`` (a module, or a name inside one) lives in."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _calls_import_module(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Call)
        and (getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) == "import_module")
        for node in ast.walk(tree)
    )


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                lines.update(range(statement.lineno, statement.end_lineno + 1))
    return lines


@cache
def _imported_names(module: str, *, run_time_only: bool = False) -> tuple[tuple[str, int], ...]:
    """(imported name, line) for every import of ``module``, wherever it sits
    (``run_time_only``: not the ones under ``if TYPE_CHECKING:``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package, run_time_only=run_time_only)


def _imports_in(source: str, package: str, *, run_time_only: bool = False) -> tuple[tuple[str, int], ...]:
    tree = ast.parse(source)
    skipped = _type_checking_lines(tree) if run_time_only else set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and node.lineno not in skipped:
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.lineno not in skipped:
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    if _calls_import_module(tree):
        # A lazy loader's table ("dse_tune.metrics", "dse_tune.cli.select", "pkg.mod:attr"):
        # a string that names one of our modules exactly is an import.
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value.partition(":")[0]
                if name in MODULES or (name.startswith("dse_tune.") and _owner(name) and ":" in node.value):
                    found.append((name, node.lineno))
    return tuple(found)


@cache
def _dependencies(module: str, *, run_time_only: bool = False) -> dict[str, int]:
    """dse_tune module -> first line of ``module`` that imports it (itself excluded)."""
    found: dict[str, int] = {}
    for name, line in _imported_names(module, run_time_only=run_time_only):
        owner = _owner(name)
        if owner is not None and owner != module:
            found.setdefault(owner, line)
    return found


def test_no_module_is_over_the_line_limit():
    long = {_relative(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_line_limit():
    long = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # From the def line to the last statement, the docstring not counted:
                # documentation is not what makes a function hard to read.
                lines = node.end_lineno - node.lineno + 1
                if ast.get_docstring(node, clean=False) is not None:
                    docstring = node.body[0]
                    lines -= docstring.end_lineno - docstring.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{_relative(path)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _top_level_imports(module: str) -> set[str]:
    return {name.split(".")[0] for name, _ in _imported_names(module)}


def test_argparse_is_imported_only_by_the_cli_package():
    outside = [
        _relative(MODULES[m]) for m in MODULES if "argparse" in _top_level_imports(m) and _layer(m) != LAYERS["dse_tune.cli"]
    ]
    assert not outside, f"argparse imported outside dse_tune/cli/: {outside}"


@pytest.mark.parametrize("file_name", ["dse_history.json", "config.json", "tuner.pkl"])
def test_run_folder_file_names_are_spelled_only_by_the_run_folder_module(file_name):
    spelled = [_relative(p) for p in SOURCES if p.name != "runs.py" and f'"{file_name}"' in p.read_text()]
    assert not spelled, f"{file_name!r} spelled outside dse_tune/runs.py: {spelled}"


SAMPLE_MODULE = """
import importlib
from typing import TYPE_CHECKING
from . import runs
from ..cli import common

if TYPE_CHECKING:
    from dse_tune.selection import SelectionResult

_EXPORTS = {"DSEMonitor": "dse_tune.integrations.lightning", "fail": "dse_tune.cli.common:fail"}

def later():
    import dse_tune.evaluation.rescore
    from dse_tune.ssl.pretrain import pretrain
    return importlib.import_module(_EXPORTS["DSEMonitor"])
"""


def test_the_import_reader_sees_every_kind_of_import():
    # The checks below are only as good as this reader.
    def owners(run_time_only):
        names = _imports_in(SAMPLE_MODULE, "dse_tune.metrics", run_time_only=run_time_only)
        return {_owner(name) for name, _ in names} - {None}

    expected = {
        "dse_tune.metrics.runs" if "dse_tune.metrics.runs" in MODULES else "dse_tune.metrics",  # from . import
        "dse_tune.cli.common",  # relative, two levels, and the lazy "module:attribute" string
        "dse_tune.evaluation.rescore", "dse_tune.ssl.pretrain",  # inside a function
        "dse_tune.integrations.lightning",  # a string handed to importlib.import_module
    }
    assert owners(run_time_only=True) == expected
    assert owners(run_time_only=False) == expected | {"dse_tune.selection"}  # under TYPE_CHECKING
    assert "dse_tune.metrics" in _dependencies("dse_tune")  # the package's lazy _EXPORTS table
    assert "dse_tune.cli.select" in _dependencies("dse_tune.cli.main")  # the subcommand table
    assert _layer("dse_tune.metrics.kmeans") == CORE and _layer("dse_tune.cli") == _layer("dse_tune.__main__") == 3


def _upward_imports() -> list[str]:
    found = []
    for module in sorted(MODULES):
        for target, line in sorted(_dependencies(module).items()):
            if _layer(target) > _layer(module):
                found.append(
                    f"{_relative(MODULES[module])}:{line} ({LAYER_NAMES[_layer(module)]}) imports "
                    f"{target} ({LAYER_NAMES[_layer(target)]})"
                )
    return found


def test_imports_point_only_inward():
    upward = _upward_imports()
    assert not upward, "imports against the layers (cli -> integrations -> ssl, evaluation -> core):\n" + "\n".join(
        upward
    )


def _cycles() -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each one an import cycle. Imports under
    ``if TYPE_CHECKING:`` do not count: they never run, so they make no cycle (they are how a
    module names the types of another that imports it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in _dependencies(module, run_time_only=True):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    return sorted(groups)


def test_no_import_cycles():
    described = [
        " <-> ".join(group)
        + ": "
        + "; ".join(
            f"{a} imports {b} (line {line})"
            for a in group
            for b, line in sorted(_dependencies(a, run_time_only=True).items())
            if b in group
        )
        for group in _cycles()
    ]
    assert not described, "import cycles (module or function level):\n" + "\n".join(described)


def test_the_core_imports_no_training_framework():
    # In the source, function-level imports included ...
    core = sorted(m for m in MODULES if _layer(m) == CORE and not m.endswith("__main__"))
    named = {
        f"{_relative(MODULES[m])}:{line} imports {name}"
        for m in core
        for name, line in _imported_names(m)
        if name.split(".")[0] in FRAMEWORKS
    }
    assert not named, f"the core imports a training framework: {sorted(named)}"
    # ... and at run time: importing the whole core loads none (not even through a library).
    program = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = [m for m in {FRAMEWORKS!r} if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
