"""Every ``>>>`` example in the package runs: the one doctest runner (no other test file
re-runs a module's examples; the ```python blocks of README.md and docs/ are tests/test_docs.py's).

Examples are documentation people copy; one that no test runs drifts silently. Modules are
collected from the source tree, so a new module's examples are run without registering it.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import dse_tune

MODULES = sorted(
    ["dse_tune"]  # the package's own docstring: walk_packages lists only what is below it
    + [info.name for info in pkgutil.walk_packages(dse_tune.__path__, prefix="dse_tune.")
       if not info.name.endswith("__main__")]
)


def _has_examples(module_name: str) -> bool:
    spec = importlib.util.find_spec(module_name)
    return spec is not None and spec.origin is not None and ">>>" in Path(spec.origin).read_text()


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("module_name", [name for name in MODULES if _has_examples(name)])
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    # Examples that exist are collected: a module whose >>> lines all sit outside docstrings
    # (or are all skipped) would pass vacuously.
    finder = doctest.DocTestFinder()
    runnable = [
        example
        for test in finder.find(module)
        for example in test.examples
        if not example.options.get(doctest.SKIP)
    ]
    assert result.attempted == len(runnable) > 0, f"{module_name}: no runnable example collected"


def test_every_module_with_examples_is_collected():
    assert len([name for name in MODULES if _has_examples(name)]) >= 10
