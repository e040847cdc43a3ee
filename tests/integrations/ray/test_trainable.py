"""The trial: a run folder per trial, resumed from it after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
import pytest

from dse_tune.integrations.ray import run_sweep
from dse_tune.integrations.ray.trainable import resume_point
from dse_tune.runs import RunRecord, mark_stopped, write_run
from dse_tune.search_space import load_search_space
from dse_tune.sweeps import RUNS_DIR, TRIAL_FILE
from tests.integrations.ray.helpers import history, tune_results
from tests.sweep_helpers import write_space


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
            storage={"max_failures": 1},
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
    assert trial["status"] == "finished"
    assert not list((tmp_path / "sweep").glob("*/checkpoint_*")), "Tune keeps no copies: the run folder has them"
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
            storage={"max_failures": 1},
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


def test_an_attempt_resumes_from_the_latest_evaluation_whose_checkpoint_exists(tmp_path):
    assert resume_point(tmp_path).path is None  # no history yet: from scratch
    write_run(tmp_path, RunRecord.from_values("t", [0.1, 0.4, 0.3], checkpoints=["c0.ckpt", "c1.ckpt", "c2.ckpt"]))
    for name in ("c0.ckpt", "c1.ckpt"):  # c2's save was cut short
        (tmp_path / name).write_bytes(b"weights")
    resume = resume_point(tmp_path)
    assert (resume.path, resume.index, resume.finished) == (tmp_path / "c1.ckpt", 1, False)
    mark_stopped(tmp_path, "degraded")
    assert resume_point(tmp_path).finished  # the pruner ended it: nothing left to train
