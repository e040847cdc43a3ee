"""TuneReporter: what a trial sends Tune after each evaluation (``ray.tune.report`` faked)."""

from __future__ import annotations

import doctest
import json
import math
import socket
from pathlib import Path

import pytest

import dse_tune.integrations.ray.reporter as reporter_module
from dse_tune.integrations.ray import CHECKPOINT_FILE, CHECKPOINT_STATE_FILE, METRIC, TuneReporter
from dse_tune.runs import COMPONENTS, Evaluation
from dse_tune.tracker import DSETracker


def test_docstring_examples():
    failures, attempted = doctest.testmod(reporter_module)
    assert attempted > 0 and failures == 0


@pytest.fixture
def reports(monkeypatch):
    """Every ``ray.tune.report`` call: (metrics, {file name: bytes} of its checkpoint)."""
    from ray import tune

    sent = []

    def report(metrics, checkpoint=None):
        folder = Path(checkpoint.path)  # staged: gone once report returns
        sent.append((metrics, {p.name: p.read_bytes() for p in folder.iterdir()}))

    monkeypatch.setattr(tune, "report", report)
    return sent


def evaluate(tracker: DSETracker, dse: float, *, checkpoint: bool = True) -> Evaluation:
    """Record one evaluation the way the DSE monitor does: checkpoint saved, then listeners."""
    index = len(tracker.evaluations)
    evaluation = Evaluation(
        index=index,
        dse=dse,
        epoch=index,
        global_step=10 * (index + 1),
        checkpoint=f"checkpoints/epoch={index:04d}.ckpt" if checkpoint else None,
        components={name: dse / (i + 1) for i, name in enumerate(COMPONENTS)},
    )
    tracker.record(evaluation, save=lambda path: path.write_bytes(f"weights {index}".encode()))
    return evaluation


def test_a_first_nan_evaluation_does_not_hide_the_finite_peak(tmp_path, reports):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path))
    for value in [math.nan, 0.3, 0.5, 0.4]:
        evaluate(tracker, value)

    best = [metrics[METRIC] for metrics, _ in reports]
    assert math.isnan(best[0])  # nothing finite yet
    assert best[1:] == [0.3, 0.5, 0.5]


def test_each_report_carries_the_evaluation_and_its_checkpoint(tmp_path, reports):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path))
    evaluations = [evaluate(tracker, value) for value in [0.2, 0.6]]

    assert len(reports) == 2
    for evaluation, (metrics, files) in zip(evaluations, reports, strict=True):
        assert metrics["dse"] == evaluation.dse
        assert {metrics[f"dse_{name}"] for name in COMPONENTS} == set(evaluation.components.values())
        assert (metrics["epoch"], metrics["evaluation"], metrics["global_step"]) == (
            evaluation.epoch,
            evaluation.index,
            evaluation.global_step,
        )
        assert metrics["node_id"] == socket.gethostname()  # outside a Ray worker
        assert metrics["run_dir"] == str(tmp_path)
        assert "dse_history" not in metrics
        assert files[CHECKPOINT_FILE] == f"weights {evaluation.index}".encode()
        state = json.loads(files[CHECKPOINT_STATE_FILE])
        assert state["evaluation"] == evaluation.to_dict()
        assert len(state["history"]["evaluations"]) == evaluation.index + 1
    assert [metrics[METRIC] for metrics, _ in reports] == [0.2, 0.6]
    assert not list(tmp_path.glob(".tune_checkpoint_*")), "staging folders are removed"


def test_a_resumed_run_sends_its_history_once(tmp_path, reports):
    first = DSETracker(run_dir=tmp_path)
    for value in [0.1, 0.4]:
        evaluate(first, value)
    resumed = DSETracker(run_dir=tmp_path)
    resumed.restore(first.run.to_dict())
    resumed.add_listener(TuneReporter(tmp_path, send_history=True))
    for value in [0.3, 0.2]:
        evaluate(resumed, value)

    (after_resume, _), (later, _) = reports
    assert after_resume["evaluation"] == 2 and after_resume["dse_history"] == [0.1, 0.4, 0.3]
    assert after_resume[METRIC] == 0.4
    assert "dse_history" not in later


def test_an_evaluation_without_a_checkpoint_file_is_refused(tmp_path, reports):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path))
    with pytest.raises(RuntimeError, match=rf"{tmp_path}: evaluation 0 has no checkpoint file \(None\)"):
        evaluate(tracker, 0.5, checkpoint=False)
    assert reports == []


def test_only_the_global_zero_process_reports(tmp_path, reports):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path, is_global_zero=lambda: False))
    evaluate(tracker, 0.5)
    assert reports == []
