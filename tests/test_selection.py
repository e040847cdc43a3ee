from __future__ import annotations

import dataclasses
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
    result = select_best(load_sweep(beta_sweep), rescored=rescored, compare="rescored")
    assert result.compare == "rescored"
    assert result.best.name == "trial_1_beta=0.1"
    assert (result.best_beta, result.best_epoch) == (0.1, 60)
    assert result.best_checkpoint == beta_sweep / "trial_1_beta=0.1/checkpoints/epoch=0060.ckpt"
    assert result.best.chosen_rescored == 0.58
    # rescored DSE is still raised by the regulariser: the decision says so
    assert result.basis == "label_free_dse"
    assert result.warnings == (
        "rescored DSE across betas is biased toward the largest beta (the regulariser raises DSE on any "
        "image); on CamVid it chose the worse beta every time",
    )


def test_rescored_values_alone_do_not_choose_beta(beta_sweep):
    # The default never prefers a larger beta on a score the regulariser raises.
    rescored = {str(beta_sweep / key): value for key, value in HELD_OUT.items()}
    result = select_best(load_sweep(beta_sweep), rescored=rescored)
    assert (result.compare, result.basis, result.best.name) == ("conservative", "conservative", "trial_0_beta=0")


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
    result = select_best(load_sweep(beta_sweep), rescored=rescored, compare="rescored")
    assert result.best.name == "ray/trial_2_beta=1"
    assert "trial trial_0_beta=0: no rescored value for its candidates; left out" in result.warnings


def test_rescored_callable_and_errors():
    runs = [
        RunRecord.from_values("a", [0.1, 0.9, 0.2], beta=1.0),
        RunRecord.from_values("b", [0.1, 0.5, 0.2], beta=0.0),
    ]
    held_out = {"a": 0.3, "b": 0.4}
    result = select_best(runs, rescored=lambda run, evaluation: held_out[run.name], compare="rescored")
    assert result.best.name == "b"
    with pytest.raises(ValueError, match="rescored gives no value for any candidate"):
        select_best(runs, rescored=lambda run, evaluation: None, compare="rescored")
    with pytest.raises(ValueError, match=r'compare="rescored" needs rescored values'):
        select_best(runs, compare="rescored")
    with pytest.raises(ValueError, match=r"compare must be one of .*got 'best'"):
        select_best(runs, compare="best")
    with pytest.raises(TypeError, match="rescored must be a mapping"):
        select_best(runs, rescored=0.5)
    with pytest.raises(ValueError, match=r'compare="few_label" needs few-label scores'):
        select_best(runs, compare="few_label")
    with pytest.raises(ValueError, match=r"score must be one of \('raw', 'standardized'\), got 'z'"):
        select_best(runs, score="z")


# --------------------------------------------------------------------- writing


def test_write_selection(beta_sweep, tmp_path):
    runs = load_sweep(beta_sweep) + [RunRecord.from_values("nan_run", [NAN, 0.1], beta=0.0)]
    rescored = {str(beta_sweep / key): value for key, value in HELD_OUT.items()}
    result = select_best(runs, rescored=rescored, compare="rescored")
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


# --------------------------------------------------------------------- the safe default (issue 11)


def _run(name, dse, beta, dims=None, ratios=None, first_epoch=0):
    """A run with components: DSE values, and optional M_dim / intra:inter histories."""
    from dse_tune.runs import Evaluation

    evaluations = []
    for i, value in enumerate(dse):
        dim = 0.5 if dims is None else dims[i]
        ratio = 0.8 if ratios is None else ratios[i]
        evaluations.append(Evaluation(
            index=i, dse=value, epoch=first_epoch + 3 * i, global_step=100 * (i + 1),
            checkpoint=f"checkpoints/{name}-{i}.ckpt",
            components={"inter": 1.0, "intra_image": ratio, "intra_batch": ratio, "dim": dim},
        ))
    return RunRecord(name, tuple(evaluations), {"dse_beta": beta})


def test_default_picks_the_smaller_beta_when_a_larger_beta_inflates_dse():
    # Probe mIoU ("labels") of each run's DSE-chosen checkpoint: beta 0 is better, but
    # the regularised runs score far higher DSE, as on CamVid.
    labels = {"beta=0": 0.28, "beta=0.01": 0.26, "beta=0.1": 0.16}
    runs = [
        _run("beta=0", [0.10, 0.30, 0.55, 0.70, 0.72, 0.71], 0.0),
        _run("beta=0.01", [0.20, 0.90, 0.95, 1.00, 1.01, 0.99], 0.01),
        _run("beta=0.1", [1.10, 1.36, 1.20, 1.40, 1.45, 1.43], 0.1),
    ]
    assert select_best(runs, compare="raw").best.name == "beta=0.1"  # the trap
    result = select_best(runs)
    assert result.best.name == max(labels, key=labels.get) == "beta=0"
    assert (result.compare, result.basis, result.best_epoch) == ("conservative", "conservative", 12)
    assert "smallest beta (0)" in result.reason


def _untrained_first(run):
    """``run`` with its first evaluation at step 0 (scored before any optimizer step)."""
    first = dataclasses.replace(run.evaluations[0], global_step=0)
    return dataclasses.replace(run, evaluations=(first, *run.evaluations[1:]))


def test_an_untrained_first_evaluation_is_a_candidate_only_when_nothing_later_is():
    # The demo's trap: DSE falls from the untrained model (step 0) onwards.
    falling = _untrained_first(_run("falling", [0.9, 0.5, 0.6, 0.4, 0.3], 0.0))
    chosen = select_run(falling)
    assert (chosen.candidates, chosen.chosen_epoch) == ((2,), 6)
    assert select_run(falling, skip_untrained=False).chosen_epoch == 0
    # Epoch 0 after a full epoch of training (DINO's checkpoint0000.pth) is trained: it competes.
    trained = _run("trained", [0.9, 0.5, 0.6, 0.4, 0.3], 0.0)
    assert (trained.evaluations[0].epoch, select_run(trained).chosen_epoch) == (0, 0)
    # Nothing later: the first evaluation is kept rather than selecting nothing.
    only = _untrained_first(_run("only", [0.9, math.nan], 0.0))
    assert select_run(only).chosen_epoch == 0


def test_score_standardized_ranks_by_the_run_standardised_dse():
    from dse_tune.metrics.standardize import standardize_dse

    run = _run("r", [0.5, 0.6, 0.55, 0.4], 0.0, dims=[0.2, 0.5, 0.9, 0.3], ratios=[0.7, 0.4, 0.6, 0.5])
    expected = standardize_dse([e.components for e in run.evaluations]).standardized
    assert selection.standardized_dse(run) == pytest.approx(expected)
    raw, standardized = select_best([run]), select_best([run], score="standardized")
    assert (raw.score, standardized.score) == ("raw", "standardized")
    assert standardized.best.chosen_score == pytest.approx(max(expected[1:]))
    assert "run-standardised DSE" in standardized.rule
    data = selection.selection_to_dict(standardized)
    assert data["score"] == "standardized" and data["best_score"] == pytest.approx(max(expected[1:]))
    with pytest.raises(ValueError, match=r"run plain: score=\"standardized\" needs the DSE components"):
        select_best([RunRecord.from_values("plain", [0.1, 0.2])], score="standardized")


def test_the_guard_leaves_out_a_run_chosen_after_a_failure_signature():
    collapsed = _run("lr=1e-2", [0.2, 0.5, 0.9, 0.95, 0.9], 0.0, dims=[0.7, 0.6, 0.05, 0.02, 0.02])
    healthy = _run("lr=1e-3", [0.2, 0.4, 0.6, 0.7, 0.65], 0.0)
    result = select_best([collapsed, healthy])
    assert result.best.name == "lr=1e-3"
    assert any(w.startswith("trial lr=1e-2: dimension_collapse at epoch 6") for w in result.warnings)
    assert "trial lr=1e-2: left out, its chosen checkpoint follows dimension_collapse" in result.warnings
    assert select_best([collapsed, healthy], guard=False).best.name == "lr=1e-2"
    trial = {t["name"]: t for t in selection.selection_to_dict(result)["trials"]}["lr=1e-2"]
    assert trial["failure_signatures"][0]["kind"] == "dimension_collapse"


def test_few_label_scores_decide_across_betas_and_are_recorded(tmp_path):
    runs = [_run("beta=0", [0.1, 0.5, 0.6, 0.55], 0.0), _run("beta=0.1", [1.0, 1.2, 1.1, 1.3], 0.1)]
    labels = {("beta=0", 2): 0.30, ("beta=0.1", 1): 0.20, ("beta=0.1", 3): 0.34}
    result = select_best(runs, confirmed=lambda run, ev: labels.get((run.name, ev.index)),
                         parameters={"label_images": 32, "labels_used": 32})
    assert (result.best.name, result.best_epoch, result.basis) == ("beta=0.1", 9, "few_label")
    assert result.best.chosen_confirmed == 0.34
    data = json.loads(write_selection(result, tmp_path).read_text())
    assert (data["basis"], data["compare"], data["best_few_label"]) == ("few_label", "few_label", 0.34)
    assert data["parameters"] == {"label_images": 32, "labels_used": 32}
    lines = selection.describe_decision(result)
    assert lines[0] == "chosen: trial beta=0.1, beta 0.1, epoch 9 (basis: few_label)"
    assert lines[1].startswith("reason: highest linear-probe mIoU")


def test_the_printed_reliability_names_the_verdict_once():
    values = [0.1, 0.5, 0.42, 0.45]
    lines = {
        verdict: selection.describe_decision(select_best([RunRecord.from_values("r", values, noise=noise)]))[2]
        for verdict, noise in (("reliable", [0.01] * 4), ("within_noise", [0.05] * 4), ("noise_unknown", None))
    }
    assert lines["reliable"].startswith("reliability: reliable: degraded: evaluation 1 beats the latest (3)")
    assert lines["within_noise"].startswith("reliability: no reliable degradation: ")
    assert lines["noise_unknown"].startswith("reliability: noise unknown: degraded: ")
    assert "no noise recorded, so not known whether beyond it" in lines["noise_unknown"]


def test_basis_is_label_free_dse_with_a_single_beta():
    runs = [_run("a", [0.1, 0.5, 0.4], 0.0), _run("b", [0.1, 0.6, 0.3], 0.0)]
    result = select_best(runs)
    assert (result.best.name, result.basis, result.compare) == ("b", "label_free_dse", "conservative")


def test_selection_signals_and_output_import_no_torch_or_numpy():
    import subprocess
    import sys

    code = ("import sys, dse_tune.selection, dse_tune.signals, dse_tune.selection_output; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_the_guard_lets_a_larger_beta_win_only_when_every_smaller_beta_run_failed():
    collapsed = _run("beta=0", [0.2, 0.5, 0.9, 0.95, 0.9], 0.0, dims=[0.7, 0.6, 0.05, 0.02, 0.02])
    regularised = _run("beta=0.1", [0.9, 1.2, 1.3, 1.25, 1.2], 0.1)
    result = select_best([collapsed, regularised])
    assert (result.best.name, result.basis) == ("beta=0.1", "conservative")
    assert result.reason == ("highest DSE among the trials of the smallest beta without a failure signature (0.1); "
                             "larger betas not credited")


def test_rescored_values_do_not_override_a_drop_within_the_noise():
    """The demo's wrong decision: held-out values re-ranked DSE's candidates although the
    run's own drop after its peak was within the noise (the latest is never rescored)."""
    from dse_tune.runs import Evaluation

    values = [0.40, 0.45, 0.52, 0.50, 0.49, 0.50]
    evaluations = tuple(
        Evaluation(index=i, dse=v, epoch=i, global_step=10 * (i + 1), noise=0.02,
                   components={"inter": 1.0, "intra_image": 0.5, "intra_batch": 0.5, "dim": 0.3 + i / 10})
        for i, v in enumerate(values)
    )
    run = RunRecord("within_noise", evaluations)
    rescored = lambda run, evaluation: {2: 0.9, 1: 0.1}.get(evaluation.index)  # noqa: E731
    kept = select_run(run, rescored=rescored)
    assert kept.choice.verdict == "within_noise" and kept.chosen == 5  # the latest, not rescored candidate 2
    # beyond the noise, the rescored values choose among DSE's candidates as before
    sharp = RunRecord("beyond_noise", tuple(dataclasses.replace(e, noise=0.001) for e in evaluations))
    assert select_run(sharp, rescored=rescored).chosen == 2
    assert kept.verdict == "within_noise" and kept.reliability.startswith("no reliable degradation")
    assert select_run(sharp, rescored=rescored).verdict == "rescored"


def test_a_trial_that_kept_its_unrescored_latest_is_named_when_rescored_values_compare_trials():
    from dse_tune.runs import Evaluation

    def run(name, noise):
        values = [0.40, 0.45, 0.52, 0.50, 0.49, 0.50]
        return RunRecord(name, tuple(
            Evaluation(index=i, dse=v, epoch=i, global_step=10 * (i + 1), noise=noise, checkpoint=f"{name}-{i}.ckpt",
                       components={"inter": 1.0, "intra_image": 0.5, "intra_batch": 0.5, "dim": 0.3 + i / 10})
            for i, v in enumerate(values)))

    rescored = lambda run, evaluation: {2: 0.9, 1: 0.1}.get(evaluation.index)  # noqa: E731
    result = select_best([run("noisy", 0.02), run("sharp", 0.001)], rescored=rescored, compare="rescored")
    assert result.best.name == "sharp"
    assert any(w.startswith("trial noisy: its kept checkpoint was not rescored (no reliable degradation")
               for w in result.warnings), result.warnings


def test_a_standardised_series_is_compared_without_the_raw_noise_and_says_so():
    from dse_tune.runs import Evaluation

    values = [0.1, 0.5, 0.3, 0.45, 0.44, 0.2]
    evaluations = tuple(
        Evaluation(i, v, epoch=i, noise=0.001, global_step=10 * (i + 1),
                   components={"inter": v, "intra_image": 0.1, "intra_batch": 0.1, "dim": v / 2 + 0.01 * i})
        for i, v in enumerate(values))
    run = RunRecord("r", evaluations)
    raw = select_run(run, ranking=(True, ""))
    standardized = select_run(run, score="standardized", ranking=(True, ""))
    assert (raw.chosen, raw.choice.verdict) == (1, "reliable")
    assert (standardized.chosen, standardized.choice.verdict) == (1, "noise_unknown")
