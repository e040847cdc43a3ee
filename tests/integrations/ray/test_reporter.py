"""TuneReporter: what a run sends Tune after each evaluation (``ray.tune.report`` replaced by a recorder)."""

from __future__ import annotations

import math
import socket

import pytest

from dse_tune.integrations.ray import METRIC, TuneReporter
from dse_tune.runs import COMPONENTS, Evaluation
from dse_tune.tracker import DSETracker


@pytest.fixture
def reports(monkeypatch):
    """Every ``ray.tune.report`` call: (metrics, its checkpoint)."""
    from ray import tune

    sent = []

    def report(metrics, checkpoint=None):
        sent.append((metrics, checkpoint))

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


def test_each_report_carries_the_evaluation_and_no_tune_checkpoint(tmp_path, reports):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path))
    evaluations = [evaluate(tracker, value) for value in [0.2, 0.6]]

    assert len(reports) == 2
    for evaluation, (metrics, checkpoint) in zip(evaluations, reports, strict=True):
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
        assert checkpoint is None  # the run folder holds the checkpoint; Tune needs no copy
    assert [metrics[METRIC] for metrics, _ in reports] == [0.2, 0.6]


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


def test_an_evaluation_without_a_checkpoint_file_is_reported(tmp_path, reports):
    # A loop of the user's own may save no checkpoints: DSE is still reported and judged.
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path))
    evaluate(tracker, 0.5, checkpoint=False)
    assert [metrics["dse"] for metrics, _ in reports] == [0.5]


def test_only_the_global_zero_process_reports(tmp_path, reports):
    tracker = DSETracker(run_dir=tmp_path)
    tracker.add_listener(TuneReporter(tmp_path, is_global_zero=lambda: False))
    evaluate(tracker, 0.5)
    assert reports == []
