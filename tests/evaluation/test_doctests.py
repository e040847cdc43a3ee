"""Every ``>>>`` example of the evaluation modules (and their commands) runs."""

from __future__ import annotations

import doctest
import importlib

import pytest

#: Modules whose docstrings carry examples: each must run at least one.
WITH_EXAMPLES = (
    "dse_tune.evaluation",
    "dse_tune.evaluation.held_out",
    "dse_tune.evaluation.labelled_data",
    "dse_tune.evaluation.linear_probe",
    "dse_tune.evaluation.linear_probe_solvers",
    "dse_tune.evaluation.plot",
    "dse_tune.evaluation.report",
    "dse_tune.evaluation.rescore",
    "dse_tune.evaluation.token_grid",
    "dse_tune.evaluation.validate",
)
#: Command modules: no examples today; any added must run too.
COMMANDS = ("dse_tune.cli.rescore", "dse_tune.cli.validate")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("module_name", WITH_EXAMPLES + COMMANDS)
def test_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    result = doctest.testmod(importlib.import_module(module_name))
    assert result.failed == 0
    if module_name in WITH_EXAMPLES:
        assert result.attempted > 0
