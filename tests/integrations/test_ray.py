"""Ray Tune adapter: stopper parity (no Ray workers), then real sweeps on a 2-CPU session."""

from __future__ import annotations

import argparse
import doctest
import json
import math
import os
import pickle
from pathlib import Path

import lightning.pytorch as pl
import optuna
import pytest

import dse_tune.integrations.ray as ray_integration
from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.integrations.optuna import DSEDegradationPruner
from dse_tune.integrations.ray import (
    CHECKPOINT_FILE,
    CHECKPOINT_STATE_FILE,
    METRIC,
    RUNS_DIR,
    TRIAL_FILE,
    OptunaPrunerStopper,
    run_sweep,
    summarize_sweep,
)
from tests.degradation_cases import DEGRADATION_CASES, RISE_PEAK_FALL, case_ids
from tests.sweep_helpers import ray_worker_environment, write_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- stopper (no Ray)


def test_docstring_examples():
    failures, attempted = doctest.testmod(ray_integration, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0


def first_stopped_index(stopper, values, trial_id="t", step_of=lambda i: i):
    for i, value in enumerate(values):
        if stopper(trial_id, {"evaluation": step_of(i), "dse": value}):
            return i
    return None


def first_pruned_index(values, pruner, direction="maximize"):
    study = optuna.create_study(direction=direction, pruner=pruner)
    trial = study.ask()
    for i, value in enumerate(values):
        trial.report(value, i)
        if trial.should_prune():
            return i
    return None


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
def test_stopper_stops_where_the_rule_and_the_optuna_pruner_do(case):
    stopper = OptunaPrunerStopper(DSEDegradationPruner(case.rule))
    index = first_stopped_index(stopper, case.values)
    assert index == case.stop_index, case.why
    assert index == first_stop_index(case.values, case.rule)
    assert index == first_pruned_index(case.values, DSEDegradationPruner(case.rule))
    if index is not None:
        record = stopper.stopped["t"]
        assert record.step == index and case.reason in record.reason


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
def test_stopper_in_min_mode_stops_on_the_negated_values(case):
    stopper = OptunaPrunerStopper(DSEDegradationPruner(case.rule), metric="loss", mode="min")
    negated = [-v for v in case.values]
    index = next(
        (i for i, v in enumerate(negated) if stopper("t", {"evaluation": i, "loss": v})), None
    )
    assert index == case.stop_index


def test_default_pruner_is_the_shared_degradation_rule():
    stopper = OptunaPrunerStopper()
    assert isinstance(stopper.pruner, DSEDegradationPruner) and stopper.pruner.rule == DegradationRule()
    assert first_stopped_index(stopper, RISE_PEAK_FALL) == 9
    assert stopper.stopped["t"].reason.startswith("degraded")


def test_steps_may_be_epochs_and_trials_are_independent():
    stopper = OptunaPrunerStopper(step_key="epoch")
    rising = [0.1 * i for i in range(len(RISE_PEAK_FALL))]
    stops = {}
    for i, (falling, rising_value) in enumerate(zip(RISE_PEAK_FALL, rising, strict=True)):
        for trial_id, value in (("falls", falling), ("rises", rising_value)):
            if trial_id not in stops and stopper(trial_id, {"epoch": 10 * i + 9, "dse": value}):
                stops[trial_id] = i
    assert stops == {"falls": 9}
    assert stopper.stopped["falls"].step == 99
    # A stopped trial stays stopped.
    assert stopper("falls", {"epoch": 200, "dse": 5.0}) is True
    assert stopper.stop_all() is False


def test_results_without_the_metric_or_step_are_ignored():
    stopper = OptunaPrunerStopper(DSEDegradationPruner(warmup=1, patience=1))
    assert stopper("t", {"epoch": 3}) is False
    assert stopper("t", {"evaluation": 0}) is False
    assert first_stopped_index(stopper, [1.0, 0.5]) == 1


def test_median_pruner_compares_with_completed_trials_as_in_optuna():
    pruner_args = {"n_startup_trials": 1, "n_warmup_steps": 1}
    good, bad = [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]
    stopper = OptunaPrunerStopper(optuna.pruners.MedianPruner(**pruner_args))
    assert first_stopped_index(stopper, good, trial_id="good") is None
    assert stopper("good", {"evaluation": 3, "dse": 1.0, "done": True}) is False  # completes it
    via_stopper = first_stopped_index(stopper, bad, trial_id="bad")

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(**pruner_args))
    reference = study.ask()
    for step, value in enumerate(good):
        reference.report(value, step)
    study.tell(reference, 1.0)
    assert via_stopper == first_pruned_index_in(study, bad) == 1
    assert stopper.study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert stopper.study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert stopper.stopped["bad"].reason == "MedianPruner pruned at evaluation 1"


def first_pruned_index_in(study, values):
    trial = study.ask()
    for i, value in enumerate(values):
        trial.report(value, i)
        if trial.should_prune():
            return i
    return None


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_patient_pruner_around_the_rule_matches_optuna():
    def patient():
        return optuna.pruners.PatientPruner(DSEDegradationPruner(warmup=2, patience=1), patience=2)

    values = [0.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1]
    # The rule alone stops at 2; PatientPruner waits until 2 steps bring no improvement.
    assert first_stop_index(values, DegradationRule(warmup=2, patience=1)) == 2
    assert first_stopped_index(OptunaPrunerStopper(patient()), values) == first_pruned_index(values, patient()) == 4


def test_a_pickled_stopper_continues_where_it_was():
    # Tune saves the stopper with the experiment and restores it on resume.
    stopper = OptunaPrunerStopper()
    for i, value in enumerate(RISE_PEAK_FALL[:8]):
        assert not stopper("t", {"evaluation": i, "dse": value})
    restored = pickle.loads(pickle.dumps(stopper))
    assert not restored("t", {"evaluation": 8, "dse": RISE_PEAK_FALL[8]})
    assert restored("t", {"evaluation": 9, "dse": RISE_PEAK_FALL[9]})


def test_a_resumed_trial_fills_the_history_a_fresh_stopper_missed():
    stopper = OptunaPrunerStopper()  # e.g. rebuilt from an older saved state
    result = {"evaluation": 9, "dse": RISE_PEAK_FALL[9], "dse_history": list(RISE_PEAK_FALL[:10])}
    assert stopper("t", result) is True
    assert stopper.stopped["t"].step == 9
    ignoring = OptunaPrunerStopper(history_key=None)
    assert ignoring("t", result) is False  # one evaluation only: warm-up


def test_on_stop_hook_receives_the_trial_the_result_and_the_reason():
    calls = []
    stopper = OptunaPrunerStopper(on_stop=lambda *args: calls.append(args))
    first_stopped_index(stopper, RISE_PEAK_FALL)
    ((trial_id, result, reason),) = calls
    assert trial_id == "t" and result["evaluation"] == 9 and reason.startswith("degraded")


def test_non_finite_values_stop_and_never_complete_a_trial():
    stopper = OptunaPrunerStopper()
    assert first_stopped_index(stopper, [0.1, 0.2, math.nan]) == 2
    assert "non-finite" in stopper.stopped["t"].reason
    done = OptunaPrunerStopper(optuna.pruners.NopPruner())
    assert done("u", {"evaluation": 0, "dse": math.nan, "done": True}) is False
    assert done.study.trials[0].state == optuna.trial.TrialState.FAIL


def test_stopper_arguments_are_checked():
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'maximize'"):
        OptunaPrunerStopper(mode="maximize")
    with pytest.raises(TypeError, match="pruner must be an optuna pruner, got DegradationRule"):
        OptunaPrunerStopper(DegradationRule())


# --------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray_worker_environment()
    # Tiny trials checkpoint every second; Tune would warn about snapshot frequency.
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tune_results(sweep_dir: Path) -> dict[str, list[dict]]:
    """Every trial's reported results (Tune's result.json), by trial id."""
    results = {}
    for path in sweep_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results[rows[0]["trial_id"]] = rows
    return results


def history(run_dir: Path) -> dict:
    return json.loads((run_dir / "dse_history.json").read_text())


@pytest.mark.slow
def test_sweep_reports_checkpoints_stops_and_selects(ray_session, tmp_path, capsys):
    from dse_tune import sweep

    # OptunaSearch draws epochs (2 or 4) and lr; the pruner stops every trial that
    # reaches evaluation 2, so 4-epoch trials stop there and 2-epoch trials finish.
    space = write_space(
        tmp_path / "space.yaml",
        pretrain={"epochs": {"choice": [2, 4]}, "lr": {"loguniform": [1.0e-4, 1.0e-3]}, "dse_beta": 0.05},
        search={"algorithm": "optuna", "num_samples": 2, "max_concurrent_trials": 2, "seed": 0},
        pruner={"type": "threshold", "lower": 1.0e9, "n_warmup_steps": 2},
        storage={"checkpoints_to_keep": 1, "max_failures": 0},
    )
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    sweep_dir = tmp_path / "sweep"
    args = parser.parse_args([str(space), "--out", str(sweep_dir), "--quiet", "--rescore-size", "16"])
    assert sweep.run(args) == 0
    printed = capsys.readouterr().out

    runs = sorted((sweep_dir / RUNS_DIR).iterdir())
    results = tune_results(sweep_dir)
    assert len(runs) == len(results) == 2
    epochs_by_trial = {}
    for run_dir in runs:
        rows = results[run_dir.name]
        record = history(run_dir)
        configured = record["config"]["epochs"]
        epochs_by_trial[run_dir.name] = configured
        evaluations = record["evaluations"]
        # One report per DSE evaluation, with the components and the running best.
        assert [r["evaluation"] for r in rows] == [e["index"] for e in evaluations]
        assert [r["epoch"] for r in rows] == [e["epoch"] for e in evaluations]
        assert [r["dse"] for r in rows] == pytest.approx([e["dse"] for e in evaluations])
        assert [r[METRIC] for r in rows] == pytest.approx(
            [max(e["dse"] for e in evaluations[: i + 1]) for i in range(len(evaluations))]
        )
        assert all(set(r) >= {"dse_inter", "dse_intra_image", "dse_intra_batch", "dse_dim", "node_id"} for r in rows)
        assert all(r["run_dir"] == str(run_dir.resolve()) for r in rows)
        # Tune keeps the best-DSE checkpoint plus the latest one; each holds the Lightning
        # checkpoint and the history up to its evaluation.
        (trial_dir,) = [p for p in sweep_dir.glob(f"*{run_dir.name}*") if p.is_dir() and p.parent == sweep_dir]
        kept = sorted(trial_dir.glob("checkpoint_*"))
        assert 1 <= len(kept) <= 2
        for checkpoint in kept:
            state = json.loads((checkpoint / CHECKPOINT_STATE_FILE).read_text())
            assert (checkpoint / CHECKPOINT_FILE).stat().st_size > 0
            assert len(state["history"]["evaluations"]) == state["evaluation"]["index"] + 1
        trial = json.loads((run_dir / TRIAL_FILE).read_text())
        if configured == 4:  # stopped at evaluation 2: its history ends there, flagged
            assert len(evaluations) == 3
            assert record["stopped_early"] and "ThresholdPruner pruned at evaluation 2" in record["stop_reason"]
            assert trial["status"] == "stopped" and trial["epochs_completed"] == 3
            assert (run_dir / "dse_curve.png").is_file()
        else:
            assert len(evaluations) == 2 and not record["stopped_early"]
            assert trial["status"] == "finished" and trial["epochs_completed"] == 2
    assert sorted(epochs_by_trial.values()) == [2, 4], "seed 0 draws both epoch counts"

    # The sweep summary: trial-epochs run vs the configured ones.
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    expected_run = sum(3 if e == 4 else 2 for e in epochs_by_trial.values())
    assert summary["trial_epochs_run"] == expected_run
    assert summary["trial_epochs_without_pruning"] == sum(epochs_by_trial.values())
    assert summary["complete"] is True
    assert f"trial-epochs run: {expected_run} of {sum(epochs_by_trial.values())} without pruning" in printed

    # Selection over every trial, stopped ones included as candidates.
    selection = json.loads((sweep_dir / "selection.json").read_text())
    assert len(selection["trials"]) == 2 and selection["compare"] == "rescored"
    assert all(t["candidates"] for t in selection["trials"])
    assert any(t["stopped_early"] for t in selection["trials"])
    assert Path(selection["best_checkpoint"]).is_file()
    assert (sweep_dir / "selection.png").stat().st_size > 0
    assert f"chosen checkpoint: {selection['best_checkpoint']}" in printed
    assert "chosen beta: 0.05" in printed


class CrashOnce(pl.Callback):
    """Kill the trial's process at the start of ``epoch`` on the first attempt only."""

    def __init__(self, epoch: int, marker: Path) -> None:
        self.epoch = epoch
        self.marker = marker

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)


@pytest.mark.slow
def test_a_killed_trial_resumes_from_its_last_checkpoint(ray_session, tmp_path):
    from dse_tune.config import load_search_space

    spec = load_search_space(
        write_space(
            tmp_path / "crash.yaml",
            pretrain={"epochs": 4},
            pruner=None,
            storage={"max_failures": 1, "checkpoints_to_keep": 1},
        )
    )
    marker = tmp_path / "crashed"
    summary = run_sweep(spec, tmp_path / "sweep", trial_callbacks=[CrashOnce(2, marker)], verbose=0)

    assert marker.exists(), "the first attempt was killed"
    ((trial_id, rows),) = tune_results(tmp_path / "sweep").items()
    run_dir = tmp_path / "sweep" / RUNS_DIR / trial_id
    trial = json.loads((run_dir / TRIAL_FILE).read_text())
    first, second = trial["attempts"]
    assert first["pid"] == int(marker.read_text()) != second["pid"]
    assert first["resumed_from_evaluation"] is None
    assert second["resumed_from_evaluation"] == 1  # the evaluation after epoch 1
    assert trial["status"] == "finished" and trial["epochs_completed"] == 4
    # The epochs continue; no evaluation is lost or repeated, in the files and in Tune.
    evaluations = history(run_dir)["evaluations"]
    assert [(e["index"], e["epoch"]) for e in evaluations] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert [r["evaluation"] for r in rows] == [0, 1, 2, 3]
    assert rows[2].get("dse_history") == pytest.approx([e["dse"] for e in evaluations[:3]])
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == ["version_0", "version_1"]
    assert summary.trials[0].attempts == 2 and summary.trials[0].status == "finished"
    assert summary.complete and summary.trial_epochs_run == summary.trial_epochs_without_pruning == 4


def test_summary_of_an_unfinished_sweep(tmp_path):
    run_dir = tmp_path / RUNS_DIR / "abc_00000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"epochs": 10}))
    (run_dir / "dse_history.json").write_text(
        json.dumps({"evaluations": [{"index": 0, "epoch": 1, "dse": 0.5}, {"index": 1, "epoch": 3, "dse": 0.6}]})
    )
    (run_dir / TRIAL_FILE).write_text(json.dumps({"status": "running", "attempts": [{"node_id": "n1"}]}))
    summary = summarize_sweep(tmp_path)
    (trial,) = summary.trials
    assert (trial.status, trial.epochs_run, trial.epochs_configured, trial.node_ids) == ("unfinished", 4, 10, ("n1",))
    assert not summary.complete
    assert summarize_sweep(tmp_path, errored_trial_dirs=["pretrain_trainable_abc_00000_0_x=1"]).trials[0].status == "failed"
    assert summary.describe() == "trial-epochs run: 4 of 10 without pruning (60% saved); 0 of 1 trials stopped early"
