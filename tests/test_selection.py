from __future__ import annotations

import doctest
import json
import math

import pytest

import dse_tune.selection as selection
from dse_tune.plotting import plot_selection
from dse_tune.runs import RunRecord, load_sweep, read_run
from dse_tune.selection import (
    candidate_indices,
    select_best,
    select_run,
    write_selection,
)
from tests.run_folders import write_run

NAN = math.nan


# --------------------------------------------------------------------- candidate_indices


@pytest.mark.parametrize(
    "values, window, top, expected",
    [
        ([0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.35, 0.6], 2, 3, [4, 7, 1]),
        ([0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.35, 0.6], 2, 1, [4]),
        ([0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.35, 0.6], 3, 3, [4]),  # 0.9 is within 3 of both
        # edges: the window is clipped, so the first and last values can be maxima
        ([3.0, 1.0, 0.0, 1.0, 2.0], 2, 3, [0, 4]),
        ([1.0, 2.0, 3.0], 2, 3, [2]),
        # window 0: every value is its own maximum
        ([0.2, 0.9, 0.5], 0, None, [1, 2, 0]),
        # ties: all equal maxima count, earlier first
        ([1.0, 2.0, 2.0, 1.0], 2, 3, [1, 2]),
        ([2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], 2, 3, [0, 6, 3]),  # a flat stretch wider
        ([2.0, 0.0, 0.0, 0.0, 0.0, 2.0], 2, 3, [0, 5]),  # than the window is a maximum
        ([5.0] * 4, 1, 2, [0, 1]),
        # non-finite values are never candidates and do not block their neighbours
        ([NAN, 5.0, NAN, 1.0, 2.0], 1, 3, [1, 4]),
        ([1.0, math.inf, 2.0], 1, 3, [2, 0]),
        ([None, -math.inf, 0.3], 2, 3, [2]),
        ([NAN, NAN], 2, 3, []),
        ([], 2, 3, []),
    ],
)
def test_candidate_indices(values, window, top, expected):
    assert candidate_indices(values, window=window, top=top) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": -1}, "window must be an integer >= 0, got -1"),
        ({"window": 1.5}, "window must be an integer >= 0, got 1.5"),
        ({"top": 0}, "top must be an integer >= 1 or None, got 0"),
    ],
)
def test_candidate_indices_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        candidate_indices([1.0, 2.0], **kwargs)


def test_candidate_indices_rejects_non_numbers():
    with pytest.raises(TypeError, match=r"values\[1\] must be a number, got 'x'"):
        candidate_indices([1.0, "x"])


# --------------------------------------------------------------------- one run


def test_select_run_picks_the_highest_candidate():
    run = RunRecord.from_values("r", [0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.35, 0.6], beta=0.0)
    chosen = select_run(run)
    assert chosen.candidates == (4, 7, 1)
    assert (chosen.chosen, chosen.chosen_epoch, chosen.chosen_dse) == (4, 4, 0.9)
    assert chosen.candidate_epochs == [4, 7, 1]


def test_select_run_without_evaluations_chooses_nothing():
    chosen = select_run(RunRecord("empty"))
    assert (chosen.candidates, chosen.chosen, chosen.chosen_epoch, chosen.chosen_checkpoint) == (
        (),
        None,
        None,
        None,
    )


def test_select_run_rescoring_can_prefer_a_lower_candidate(tmp_path):
    run = read_run(write_run(tmp_path / "run", [0.1, 0.6, 0.3, 0.2, 0.9, 0.4]))
    rescored = {
        tmp_path / "run" / "checkpoints" / "epoch=0010.ckpt": 0.7,
        str(tmp_path / "run" / "checkpoints" / "epoch=0040.ckpt"): 0.5,
    }
    chosen = select_run(run, rescored=rescored)
    assert chosen.candidates == (4, 1)
    assert (chosen.chosen_epoch, chosen.chosen_rescored) == (10, 0.7)
    assert chosen.chosen_checkpoint == tmp_path / "run" / "checkpoints" / "epoch=0010.ckpt"


# --------------------------------------------------------------------- across runs


HELD_OUT = {
    "trial_0_beta=0/checkpoints/epoch=0020.ckpt": 0.52,
    "trial_1_beta=0.1/checkpoints/epoch=0020.ckpt": 0.50,
    "trial_1_beta=0.1/checkpoints/epoch=0060.ckpt": 0.58,
    "ray/trial_2_beta=1/checkpoints/epoch=0030.ckpt": 0.40,
}


def test_raw_dse_favours_the_largest_beta(beta_sweep):
    # The trap this module is built to avoid: without a fair score, beta=1 wins.
    result = select_best(load_sweep(beta_sweep), compare="raw")
    assert (result.best_beta, result.best_epoch) == (1.0, 30)
    assert any("biased toward the largest beta" in w for w in result.warnings)


def test_held_out_rescoring_beats_largest_beta_wins(beta_sweep):
    rescored = {str(beta_sweep / key): value for key, value in HELD_OUT.items()}
    result = select_best(load_sweep(beta_sweep), rescored=rescored)
    assert result.compare == "rescored"
    assert result.best.name == "trial_1_beta=0.1"
    assert (result.best_beta, result.best_epoch) == (0.1, 60)
    assert result.best_checkpoint == beta_sweep / "trial_1_beta=0.1/checkpoints/epoch=0060.ckpt"
    assert result.best.chosen_rescored == 0.58
    assert result.warnings == ()


def test_without_rescoring_a_larger_beta_is_not_credited(beta_sweep):
    result = select_best(load_sweep(beta_sweep))
    assert result.compare == "conservative"
    assert (result.best.name, result.best_beta, result.best_epoch) == ("trial_0_beta=0", 0.0, 20)
    assert any("betas [0.1, 1.0] not compared with 0.0" in w for w in result.warnings)
    assert "smallest beta" in result.rule


def test_conservative_compares_runs_of_the_same_beta_by_dse():
    runs = [
        RunRecord.from_values("lr=1e-3", [0.1, 0.5, 0.4], beta=0.0),
        RunRecord.from_values("lr=1e-4", [0.1, 0.6, 0.2], beta=None),  # no beta: 0
        RunRecord.from_values("big", [0.1, 0.9, 0.2], beta=0.5),
    ]
    result = select_best(runs)
    assert result.best.name == "lr=1e-4"
    assert result.best_beta is None


def test_single_beta_conservative_equals_raw():
    runs = [
        RunRecord.from_values("a", [0.1, 0.5, 0.4], beta=0.2),
        RunRecord.from_values("b", [0.1, 0.3, 0.7, 0.6], beta=0.2),
    ]
    conservative, raw = select_best(runs), select_best(runs, compare="raw")
    assert conservative.best.name == raw.best.name == "b"
    assert (
        conservative.warnings
        == raw.warnings
        == ("the selected evaluation of trial b has no checkpoint",)
    )


def test_ties_between_runs_go_to_the_earlier_run():
    runs = [
        RunRecord.from_values("first", [0.1, 0.8, 0.2], beta=0.0),
        RunRecord.from_values("second", [0.8, 0.1, 0.0], beta=0.0),
    ]
    assert select_best(runs).best.name == "first"


def test_an_early_stopped_run_keeps_its_peak_as_candidate():
    runs = [
        RunRecord.from_values("long", [0.1, 0.3, 0.5, 0.6, 0.65, 0.7], beta=0.0),
        RunRecord.from_values("stopped", [0.2, 0.9, 0.5, 0.4, 0.3], beta=0.0, stopped_early=True),
    ]
    result = select_best(runs)
    assert (result.best.name, result.best_epoch, result.best.stopped_early) == ("stopped", 1, True)


def test_runs_without_finite_dse_are_reported_not_selected():
    runs = [
        RunRecord("crashed"),
        RunRecord.from_values("diverged", [NAN, NAN], beta=0.0),
        RunRecord.from_values("fine", [0.1, NAN, 0.3, 0.2], beta=0.0),
    ]
    result = select_best(runs)
    assert result.best.name == "fine"
    assert result.best_epoch == 2
    assert result.warnings[:2] == (
        "trial crashed: no finite DSE evaluations; not selectable",
        "trial diverged: no finite DSE evaluations; not selectable",
    )


def test_nothing_selectable_gives_no_best():
    result = select_best([RunRecord("crashed")])
    assert result.best is None
    assert (result.best_checkpoint, result.best_epoch, result.best_beta) == (None, None, None)


def test_runs_missing_rescored_values_are_left_out(beta_sweep):
    rescored = {str(beta_sweep / "ray/trial_2_beta=1/checkpoints/epoch=0030.ckpt"): 0.40}
    result = select_best(load_sweep(beta_sweep), rescored=rescored)
    assert result.best.name == "ray/trial_2_beta=1"
    assert "trial trial_0_beta=0: no rescored value for its candidates; left out" in result.warnings


def test_rescored_callable_and_errors():
    runs = [
        RunRecord.from_values("a", [0.1, 0.9, 0.2], beta=1.0),
        RunRecord.from_values("b", [0.1, 0.5, 0.2], beta=0.0),
    ]
    held_out = {"a": 0.3, "b": 0.4}
    result = select_best(runs, rescored=lambda run, evaluation: held_out[run.name])
    assert result.best.name == "b"
    with pytest.raises(ValueError, match="rescored gives no value for any candidate"):
        select_best(runs, rescored=lambda run, evaluation: None)
    with pytest.raises(ValueError, match=r'compare="rescored" needs rescored values'):
        select_best(runs, compare="rescored")
    with pytest.raises(ValueError, match=r"compare must be one of .*got 'best'"):
        select_best(runs, compare="best")
    with pytest.raises(TypeError, match="rescored must be a mapping"):
        select_best(runs, rescored=0.5)


# --------------------------------------------------------------------- writing


def test_write_selection(beta_sweep, tmp_path):
    runs = load_sweep(beta_sweep) + [RunRecord.from_values("nan_run", [NAN, 0.1], beta=0.0)]
    rescored = {str(beta_sweep / key): value for key, value in HELD_OUT.items()}
    result = select_best(runs, rescored=rescored)
    out = tmp_path / "out"
    path = write_selection(result, out)

    assert path == out / "selection.json"
    assert sorted(p.name for p in out.iterdir()) == ["selection.json"]  # no temp file left
    # strict JSON: no NaN/Infinity tokens
    data = json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(token))
    assert data["best_checkpoint"] == str(
        beta_sweep / "trial_1_beta=0.1/checkpoints/epoch=0060.ckpt"
    )
    assert (data["best_epoch"], data["best_beta"], data["best_trial"]) == (
        60,
        0.1,
        "trial_1_beta=0.1",
    )
    assert (data["best_dse"], data["best_rescored"], data["compare"]) == (0.6, 0.58, "rescored")
    assert data["rule"] == result.rule and "held-out" in data["rule"]
    trials = {t["name"]: t for t in data["trials"]}
    assert set(trials) == {"trial_0_beta=0", "trial_1_beta=0.1", "ray/trial_2_beta=1", "nan_run"}
    chosen = trials["trial_1_beta=0.1"]
    assert chosen["candidates"] == [20, 60]
    assert chosen["candidate_rescored"] == [0.50, 0.58]
    assert (chosen["chosen_epoch"], chosen["dse"], chosen["rescored"]) == (60, 0.6, 0.58)
    assert (chosen["stopped_early"], chosen["evaluations"], chosen["selected"]) == (True, 9, True)
    assert trials["ray/trial_2_beta=1"]["selected"] is False
    assert trials["nan_run"]["candidate_dse"] == [0.1]

    write_selection(select_best(runs, compare="raw"), out)  # overwrites in place
    assert json.loads(path.read_text())["best_beta"] == 1.0


def test_plot_selection_writes_a_png(beta_sweep, tmp_path):
    runs = load_sweep(beta_sweep) + [RunRecord("crashed")]
    path = plot_selection(select_best(runs), tmp_path / "plots" / "selection.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert sorted(p.name for p in path.parent.iterdir()) == ["selection.png"]


def test_docstring_examples_run():
    result = doctest.testmod(selection)
    assert result.attempted >= 10 and result.failed == 0
