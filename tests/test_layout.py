"""The layout's rules, checked: small modules and functions, argparse only in the CLI,
run-folder file names spelled only by their owner, the core free of training frameworks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dse_tune"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


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


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_argparse_is_imported_only_by_the_cli_package():
    outside = [
        _relative(p) for p in SOURCES if "argparse" in _imports(p) and "cli" not in p.relative_to(PACKAGE).parts
    ]
    assert not outside, f"argparse imported outside dse_tune/cli/: {outside}"


@pytest.mark.parametrize("file_name", ["dse_history.json", "config.json", "tuner.pkl"])
def test_run_folder_file_names_are_spelled_only_by_the_run_folder_module(file_name):
    spelled = [_relative(p) for p in SOURCES if p.name != "runs.py" and f'"{file_name}"' in p.read_text()]
    assert not spelled, f"{file_name!r} spelled outside dse_tune/runs.py: {spelled}"


def test_the_core_imports_no_training_framework():
    program = (
        "import sys\n"
        "import dse_tune.metrics, dse_tune.degradation, dse_tune.runs, dse_tune.selection, dse_tune.tracker\n"
        "import dse_tune.search_space, dse_tune.regularizer, dse_tune.plotting\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'ray', 'optuna') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
