"""The sweep folder (no Ray): the summary read from run folders, the trial attempts, the start record."""

from __future__ import annotations

import json
import math

import pytest

from dse_tune.runs import CONFIG_FILE, HISTORY_FILE, RunRecord, mark_stopped, write_config, write_run
from dse_tune.search_space import parse_search_space
from dse_tune.sweeps import (
    RUNS_DIR,
    TRIAL_FILE,
    finish_attempt,
    load_saved_spec,
    read_trial_state,
    save_sweep_record,
    start_attempt,
    summarize_sweep,
)


def test_summary_of_an_unfinished_sweep(tmp_path):
    run_dir = tmp_path / RUNS_DIR / "abc_00000"
    run_dir.mkdir(parents=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps({"epochs": 10}))
    (run_dir / HISTORY_FILE).write_text(
        json.dumps({"evaluations": [{"index": 0, "epoch": 1, "dse": 0.5}, {"index": 1, "epoch": 3, "dse": 0.6}]})
    )
    (run_dir / TRIAL_FILE).write_text(json.dumps({"status": "running", "attempts": [{"node_id": "n1"}]}))
    summary = summarize_sweep(tmp_path)
    (trial,) = summary.trials
    assert (trial.status, trial.epochs_run, trial.epochs_configured, trial.node_ids) == ("interrupted", 4, 10, ("n1",))
    assert not summary.complete
    assert summarize_sweep(tmp_path, errored_trial_dirs=["pretrain_trainable_abc_00000_0_x=1"]).trials[0].status == "failed"
    # The interruption is not pruning: nothing saved, 6 epochs still to run.
    assert summary.trial_epochs_saved == 0 and trial.epochs_left == 6
    assert summary.describe() == (
        "trial-epochs run: 4 of 10 without pruning (0% saved by pruning); 0 of 1 trials stopped early; "
        "1 interrupted (6 trial-epochs still to run: dse-tune sweep --resume)"
    )


def test_a_trial_whose_first_evaluation_is_nan_shows_its_finite_peak(tmp_path):
    finished = tmp_path / RUNS_DIR / "nan_first"
    write_run(finished, RunRecord.from_values("nan_first", [math.nan, 0.3, 0.7, 0.5], config={"epochs": 4}))
    (finished / TRIAL_FILE).write_text(json.dumps({"status": "finished", "attempts": [{}]}))
    all_nan = tmp_path / RUNS_DIR / "all_nan"
    write_run(all_nan, RunRecord.from_values("all_nan", [math.nan, math.nan], config={"epochs": 2}))

    summary = summarize_sweep(tmp_path)
    by_id = {t.trial_id: t for t in summary.trials}
    assert by_id["nan_first"].best_dse == 0.7
    assert by_id["all_nan"].best_dse is None  # nothing finite: no peak
    written = {t["trial_id"]: t for t in summary.to_dict()["trials"]}
    assert written["nan_first"]["best_dse"] == 0.7 and written["all_nan"]["best_dse"] is None


def test_a_trial_without_a_history_yet_has_no_evaluations(tmp_path):
    starting = tmp_path / RUNS_DIR / "starting"
    write_config(starting, {"epochs": 3})
    (starting / TRIAL_FILE).write_text(json.dumps({"status": "running", "attempts": [{"node_id": "n1"}]}))
    broken = tmp_path / RUNS_DIR / "broken"
    broken.mkdir()
    (broken / HISTORY_FILE).write_text("{")

    trials = {t.trial_id: t for t in summarize_sweep(tmp_path).trials}
    assert (trials["starting"].evaluations, trials["starting"].epochs_run, trials["starting"].epochs_configured) == (0, 0, 3)
    assert trials["broken"].evaluations == 0 and trials["broken"].status == "interrupted"
    assert summarize_sweep(tmp_path / "missing").trials == ()


def test_only_real_stops_count_as_pruning_savings(tmp_path):
    # The case: one trial stopped by the pruner, one interrupted by Ctrl-C.
    stopped = tmp_path / RUNS_DIR / "stopped"
    write_run(stopped, RunRecord.from_values("stopped", [0.5, 0.6, 0.4], config={"epochs": 4}))
    mark_stopped(stopped, "degraded")  # the run folder alone says it was stopped
    (stopped / TRIAL_FILE).write_text(json.dumps({"status": "running", "attempts": [{}]}))
    interrupted = tmp_path / RUNS_DIR / "interrupted"
    write_run(interrupted, RunRecord.from_values("interrupted", [0.5], config={"epochs": 4}))
    (interrupted / TRIAL_FILE).write_text(json.dumps({"status": "running", "attempts": [{}]}))

    summary = summarize_sweep(tmp_path)
    by_id = {t.trial_id: t for t in summary.trials}
    assert (by_id["stopped"].status, by_id["stopped"].epochs_saved) == ("stopped", 1)
    assert (by_id["interrupted"].status, by_id["interrupted"].epochs_saved) == ("interrupted", 0)
    assert summary.trial_epochs_saved == 1
    assert summary.describe() == (
        "trial-epochs run: 4 of 8 without pruning (12% saved by pruning); 1 of 2 trials stopped early; "
        "1 interrupted (3 trial-epochs still to run: dse-tune sweep --resume)"
    )
    written = summary.to_dict()
    assert written["trial_epochs_saved_by_pruning"] == 1 and written["interrupted_trials"] == ["interrupted"]


def test_a_late_finish_of_a_superseded_attempt_keeps_the_retrys_record(tmp_path):
    # Attempt 1 (on a removed node) finishes after attempt 2 started elsewhere.
    assert start_attempt(tmp_path, "t", node_id="a") == 1
    assert start_attempt(tmp_path, "t", node_id="b", resumed_from_evaluation=2) == 2
    finish_attempt(tmp_path, 1)
    state = read_trial_state(tmp_path)
    assert [a["node_id"] for a in state["attempts"]] == ["a", "b"] and state["status"] == "running"
    assert state["attempts"][1]["resumed_from_evaluation"] == 2
    finish_attempt(tmp_path, 2)
    assert read_trial_state(tmp_path)["status"] == "finished"


def test_a_finished_trial_ran_its_configured_epochs(tmp_path):
    run_dir = tmp_path / RUNS_DIR / "t"
    write_run(run_dir, RunRecord.from_values("t", [0.1, 0.2], config={"epochs": 6}))  # evaluated every 3 epochs
    finish_attempt(run_dir, start_attempt(run_dir, "t"))
    (trial,) = summarize_sweep(tmp_path).trials
    assert (trial.status, trial.epochs_run, trial.attempts) == ("finished", 6, 1)


def test_a_sweep_folder_keeps_its_space_and_refuses_another_folder(tmp_path):
    save_sweep_record(parse_search_space({"name": "demo"}), tmp_path, data="synthetic")
    assert load_saved_spec(tmp_path).name == "demo"
    with pytest.raises(FileNotFoundError, match="has no search_space.yaml; it was not started by dse_tune's sweep"):
        load_saved_spec(tmp_path / "other")
