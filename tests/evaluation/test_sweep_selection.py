"""select_sweep: rescore (when possible), select, write; what dse-tune sweep runs last."""

from __future__ import annotations

import pytest

from dse_tune.evaluation.sweep_selection import select_sweep
from dse_tune.runs import SELECTION_FILE, RunRecord, write_run
from dse_tune.search_space import parse_search_space


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


def test_the_search_space_selection_section_takes_few_label_options():
    import pytest

    from dse_tune.search_space import SearchSpaceError

    spec = parse_search_space({"selection": {"confirm_with": "labelled", "label_images": 16}})
    assert (spec.confirm_with, spec.label_images) == ("labelled", 16)
    assert spec.to_dict()["selection"] == {"window": 2, "top": 3, "confirm_with": "labelled", "label_images": 16}
    assert parse_search_space(spec.to_dict()).confirm_with == "labelled"
    assert parse_search_space({}).confirm_with is None
    with pytest.raises(SearchSpaceError, match="selection.label_images: must be an integer >= 2"):
        parse_search_space({"selection": {"label_images": 1}})
    with pytest.raises(SearchSpaceError, match="selection.confirm_with: must be a folder path or null"):
        parse_search_space({"selection": {"confirm_with": 3}})


@pytest.mark.slow
def test_a_sweep_with_confirm_with_decides_by_few_labels(tmp_path, one_torch_thread):
    import json

    from tests.evaluation.test_few_label import write_colour_regions
    from tests.evaluation.tiny_runs import pretrain_sweep

    pretrain_sweep(tmp_path / "runs")
    write_colour_regions(tmp_path / "labelled")
    spec = parse_search_space({"selection": {"confirm_with": str(tmp_path / "labelled"), "label_images": 8}})
    said = []
    choice = select_sweep(tmp_path, spec, rescore=False, log=said.append)
    assert choice.result.basis == "few_label" and choice.conservative is not None
    assert said == [f"few-label confirmation: {len(choice.result.trials)} candidate(s) probed with 8 labelled images"]
    data = json.loads((tmp_path / SELECTION_FILE).read_text())
    assert (data["basis"], data["parameters"]["labels_used"]) == ("few_label", 8)
