"""The trial: a run folder per trial, resumed after a crash; a stop recorded by the driver."""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest

import dse_tune.integrations.ray.trainable as trainable_module
from dse_tune.integrations.ray import RUNS_DIR, TRIAL_FILE, mark_run_stopped, run_sweep
from dse_tune.runs import CURVE_PLOT, RunRecord, read_run, write_run
from dse_tune.search_space import load_search_space
from tests.integrations.ray.helpers import history, tune_results
from tests.sweep_helpers import write_space


def test_docstring_examples():
    failures, attempted = doctest.testmod(trainable_module)
    assert attempted > 0 and failures == 0


def test_a_stop_decided_on_the_driver_is_recorded_in_the_run_folder(tmp_path):
    write_run(tmp_path, RunRecord.from_values("t", [0.2, 0.5, 0.3]))
    (tmp_path / TRIAL_FILE).write_text(json.dumps({"status": "running", "attempts": [{"attempt": 1}]}))
    mark_run_stopped("t", {"run_dir": str(tmp_path), "epoch": 2}, "degraded at evaluation 2")

    run = read_run(tmp_path)
    assert run.stopped_early and run.stop_reason == "stopped by the sweep's pruner: degraded at evaluation 2"
    trial = json.loads((tmp_path / TRIAL_FILE).read_text())
    assert (trial["status"], trial["stop_reason"], trial["epochs_completed"]) == ("stopped", "degraded at evaluation 2", 3)
    assert trial["attempts"] == [{"attempt": 1}]
    assert (tmp_path / CURVE_PLOT).stat().st_size > 0


def test_a_stop_without_a_readable_run_folder_only_warns(tmp_path):
    mark_run_stopped("t", {"epoch": 2}, "no run folder reported")  # nothing to record
    with pytest.warns(UserWarning, match="cannot mark trial t as stopped: no readable history in"):
        mark_run_stopped("t", {"run_dir": str(tmp_path), "epoch": 2}, "degraded")
    assert not (tmp_path / TRIAL_FILE).exists()


# --------------------------------------------------------------------------- on Ray


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


class CrashBeforeTuneHears:
    """A run listener (called before the Tune reporter): log every evaluation computed,
    and on the first attempt kill the process right after ``evaluation`` is recorded in
    the run folder (checkpoint saved, history written) but before Tune hears of it, as a
    hard interruption does between the run folder and Tune's saved state."""

    def __init__(self, evaluation: int, log: Path) -> None:
        self.evaluation = evaluation
        self.log = log

    def __call__(self, evaluation, decision) -> None:
        with self.log.open("a") as log:
            log.write(f"{evaluation.index}\n")
        if evaluation.index == self.evaluation and not self.log.with_suffix(".crashed").exists():
            self.log.with_suffix(".crashed").write_text(str(os.getpid()))
            os._exit(1)


@pytest.mark.slow
def test_a_resumed_trial_retrains_no_evaluation_tune_never_heard_of(ray_session, tmp_path):
    spec = load_search_space(
        write_space(
            tmp_path / "unheard.yaml",
            pretrain={"epochs": 4},
            pruner={"type": "dse_degradation", "warmup": 5},
            storage={"max_failures": 1, "checkpoints_to_keep": 1},
        )
    )
    log = tmp_path / "evaluations.log"
    summary = run_sweep(spec, tmp_path / "sweep", trial_listeners=[CrashBeforeTuneHears(1, log)], verbose=0)

    assert log.with_suffix(".crashed").exists(), "the first attempt was killed"
    # Every evaluation was computed exactly once: evaluation 1, done before the crash
    # but never reported, was not trained again.
    assert log.read_text().split() == ["0", "1", "2", "3"]
    ((trial_id, rows),) = tune_results(tmp_path / "sweep").items()
    run_dir = tmp_path / "sweep" / RUNS_DIR / trial_id
    first, second = json.loads((run_dir / TRIAL_FILE).read_text())["attempts"]
    assert first["resumed_from_evaluation"] is None and second["resumed_from_evaluation"] == 1
    assert [(e["index"], e["epoch"]) for e in history(run_dir)["evaluations"]] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    # Tune heard of evaluation 1 from the resumed attempt, with the history it missed.
    assert [r["evaluation"] for r in rows][-3:] == [1, 2, 3]
    assert rows[-3]["dse_history"] == pytest.approx([e["dse"] for e in history(run_dir)["evaluations"][:2]])
    assert summary.trials[0].status == "finished" and summary.trial_epochs_saved == 0


def test_a_late_finish_of_a_superseded_attempt_keeps_the_retrys_record(tmp_path):
    # Attempt 1 (on a removed node) finishes after attempt 2 started elsewhere.
    from dse_tune.integrations.ray.trainable import finish_attempt, read_trial_state, write_json

    first = {"trial_id": "t", "status": "running", "attempts": [{"attempt": 1, "node_id": "a"}]}
    write_json(tmp_path / TRIAL_FILE, {**first, "attempts": [*first["attempts"], {"attempt": 2, "node_id": "b"}]})
    finish_attempt(tmp_path, first, stopped=False, epochs_completed=3, stop_reason=None)
    state = read_trial_state(tmp_path)
    assert [a["node_id"] for a in state["attempts"]] == ["a", "b"] and state["status"] == "running"
    retry = {**state}
    finish_attempt(tmp_path, retry, stopped=False, epochs_completed=4, stop_reason=None)
    state = read_trial_state(tmp_path)
    assert state["status"] == "finished" and state["epochs_completed"] == 4
