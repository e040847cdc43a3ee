"""TrialReporter: a run listener that reports each DSE and stops the run on a prune.

A framework-free DSETracker stands in for the run: ``tracker.record(evaluation)`` is
what the Lightning monitor does after each scored evaluation.
"""

from __future__ import annotations

import math

import optuna
import pytest

from dse_tune.degradation import DegradationRule
from dse_tune.integrations.optuna import DSEDegradationPruner, TrialReporter
from dse_tune.runs import Evaluation, read_run
from dse_tune.tracker import DSETracker

optuna.logging.set_verbosity(optuna.logging.WARNING)

RISE_AND_FALL = [0.2, 0.6, 0.9, 0.7, 0.5, 0.4, 0.3, 0.2]


def run_until_stopped(values, tracker, reporter):
    """Record ``values`` one by one like a training loop; the evaluations run."""
    tracker.add_listener(reporter)
    for index, value in enumerate(values):
        if tracker.record(Evaluation(index, value, epoch=index)).stop:
            return index + 1
    return len(values)


def test_a_prune_stops_the_run_and_is_recorded(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner(warmup=3, patience=2))
    trial = study.ask()
    reporter = TrialReporter(trial)
    tracker = DSETracker(run_dir=tmp_path)
    assert run_until_stopped(RISE_AND_FALL, tracker, reporter) == 5
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    assert reported == dict(enumerate(RISE_AND_FALL[:5]))
    assert reporter.stopped_by == "pruner" and reporter.stop_reason.startswith("pruned: degraded")
    run = read_run(tmp_path)  # the tracker wrote the stop into the run folder
    assert run.stopped_early and run.stop_reason == reporter.stop_reason


def test_the_runs_own_rule_is_respected():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    reporter = TrialReporter(study.ask())
    tracker = DSETracker(rule=DegradationRule(warmup=3, patience=2))
    assert run_until_stopped(RISE_AND_FALL, tracker, reporter) == 5
    assert reporter.stopped_by == "degradation rule" and reporter.stop_reason.startswith("degraded")
    assert tracker.run.stop_reason == reporter.stop_reason


def test_report_only_never_stops():
    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner(warmup=3, patience=2))
    reporter = TrialReporter(study.ask(), prune=False)
    tracker = DSETracker()
    assert run_until_stopped(RISE_AND_FALL, tracker, reporter) == len(RISE_AND_FALL)
    assert reporter.stopped_by is None and not tracker.stopped


def test_any_pruner_gives_a_reason():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    reporter = TrialReporter(study.ask())
    assert run_until_stopped([0.6, 0.4, 0.9], DSETracker(), reporter) == 2
    assert reporter.stop_reason == "pruned by ThresholdPruner after evaluation 1 (DSE 0.4)"


def test_a_nan_is_reported_and_judged_by_the_pruner():
    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner())  # nan_policy stop
    trial = study.ask()
    reporter = TrialReporter(trial)
    assert run_until_stopped([0.5, math.nan, 0.7], DSETracker(), reporter) == 2
    assert math.isnan(trial.storage.get_trial(trial._trial_id).intermediate_values[1])
    assert reporter.stopped_by == "pruner"


def test_needs_a_live_trial():
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    with pytest.raises(TypeError, match="trial must be a live optuna Trial, got FrozenTrial"):
        TrialReporter(study.trials[0])
