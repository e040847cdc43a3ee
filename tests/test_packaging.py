"""The wheel's package list in pyproject.toml (explicit, because search_spaces/ is mapped in)."""

from __future__ import annotations

import pytest

from tests.sweep_helpers import REPO_ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def test_every_subpackage_of_the_source_tree_is_packaged():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for init in (REPO_ROOT / "dse_tune").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = set(setuptools["packages"])
    assert on_disk <= listed, f"subpackages missing from [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert listed - on_disk == {"dse_tune.search_spaces"}
    assert setuptools["package-dir"]["dse_tune.search_spaces"] == "search_spaces"


def test_ci_runs_the_whole_suite_and_the_fast_lane_leaves_out_only_slow_tests():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci  # CI runs the README's test command
    recipes = {}
    for block in (REPO_ROOT / "Makefile").read_text().split("\n\n"):
        for target in ("test", "test-fast"):
            if block.startswith(f"{target}:") or f"\n{target}:" in block:
                recipes[target] = block.split(f"{target}:", 1)[1]
    assert "pytest -q tests" in recipes["test"] and "not slow" not in recipes["test"]
    assert 'pytest -q -m "not slow" tests' in recipes["test-fast"]
    assert "make test-fast" in (REPO_ROOT / "README.md").read_text()
