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
