"""select_sweep: rescore (when possible), select, write; what dse-tune sweep runs last."""

from __future__ import annotations

import doctest

import dse_tune.integrations.ray.selection as selection_module
from dse_tune.integrations.ray.selection import select_sweep
from dse_tune.runs import SELECTION_FILE, RunRecord, write_run
from dse_tune.search_space import parse_search_space


def test_docstring_examples():
    failures, attempted = doctest.testmod(selection_module)
    assert attempted > 0 and failures == 0


def test_an_empty_sweep_selects_nothing_and_writes_nothing(tmp_path):
    choice = select_sweep(tmp_path, parse_search_space({}))
    assert choice.runs == () and choice.result is None and choice.written == ()
    assert not (tmp_path / SELECTION_FILE).exists()


def test_when_rescoring_fails_the_trials_are_compared_conservatively(tmp_path):
    # Histories without checkpoint files: nothing can be rescored.
    write_run(tmp_path / "runs" / "a", RunRecord.from_values("a", [0.1, 0.5, 0.2], beta=0.0))
    write_run(tmp_path / "runs" / "b", RunRecord.from_values("b", [0.2, 0.9, 0.3], beta=0.1))
    said = []
    choice = select_sweep(tmp_path, parse_search_space({}), rescore_data="synthetic", log=said.append)

    assert len(said) == 1 and said[0].startswith("rescoring failed (") and said[0].endswith(
        "; comparing trials conservatively"
    )
    assert choice.rescored is None and choice.conservative is None
    assert choice.result.compare == "conservative" and choice.result.best.name == "runs/a"
    assert (tmp_path / SELECTION_FILE).is_file()
