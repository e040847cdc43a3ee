"""The label check of a decision, on a tiny real sweep."""

from __future__ import annotations

import pytest

from dse_tune.evaluation.label_check import check_choice, format_label_check
from dse_tune.runs import load_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_check_sets_the_chosen_checkpoint_beside_last_best_and_random_init(sweep):
    runs = load_sweep(sweep)
    first = runs[0]
    chosen = first.checkpoint_path(first.evaluations[0])
    check = check_choice(sweep, chosen, images_per_split=8, progress=False, linear_probe_kwargs={"steps": 5})
    assert check["chosen"]["run"] == first.name and check["chosen"]["epoch"] == first.evaluations[0].epoch
    assert check["last"]["run"] == first.name and check["last"]["epoch"] == first.evaluations[-1].epoch
    mious = [check[key]["miou"] for key in ("chosen", "last", "best", "random_init")]
    assert all(0.0 <= m <= 1.0 for m in mious)
    assert check["best"]["miou"] >= max(check["chosen"]["miou"], check["last"]["miou"])
    assert check["right"] == (check["best"]["miou"] - check["chosen"]["miou"] <= 0.01)
    text = format_label_check(check)
    assert "chosen checkpoint" in text and "random init" in text
    assert ("the decision was right" in text) == check["right"]


def test_a_checkpoint_outside_the_sweep_is_named(sweep, tmp_path):
    with pytest.raises(ValueError, match="nowhere.ckpt is not a checkpoint of a run below"):
        check_choice(sweep, tmp_path / "nowhere.ckpt", images_per_split=8, progress=False,
                     linear_probe_kwargs={"steps": 5})
