"""OptunaPrunerStopper: stops where the rule and Optuna's own pruning do (no Ray workers)."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest

from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.integrations.optuna import DSEDegradationPruner
from dse_tune.integrations.ray import OptunaPrunerStopper, mark_run_stopped
from dse_tune.runs import CURVE_PLOT, RunRecord, read_run, write_run
from tests.degradation_cases import DEGRADATION_CASES, NOISY_CASES, RISE_PEAK_FALL, case_ids

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


@pytest.mark.parametrize("case", [c for c in NOISY_CASES if not c.first_untrained], ids=case_ids)
def test_stopper_passes_the_reported_noise_to_the_rule(case):
    """The TuneReporter sends ``dse_noise``; drops within it do not stop a Tune trial either."""
    stopper = OptunaPrunerStopper(DSEDegradationPruner(case.rule))
    index = next(
        (
            i
            for i, (value, noise) in enumerate(zip(case.values, case.noise))
            if stopper("t", {"evaluation": i, "dse": value, "dse_noise": noise})
        ),
        None,
    )
    assert index == case.stop_index, case.why
    assert index == first_stop_index(case.values, case.rule, noise=case.noise)


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


# --------------------------------------------------------------------------- bare reports (issue 11.7)

#: A trainable's DSE falling 0.727 -> 0.537 over 8 iterations (what the issue saw run to
#: the end with ``stopped: {}``).
FALLING = [0.727, 0.7, 0.673, 0.646, 0.618, 0.591, 0.564, 0.537]


def test_a_bare_dse_report_is_stepped_by_training_iteration():
    stopper = OptunaPrunerStopper()
    index = next(
        (i for i, v in enumerate(FALLING) if stopper("t", {"training_iteration": i + 1, "dse": v})), None
    )
    assert index == first_stop_index(FALLING, DegradationRule()) == 4
    assert stopper.stopped["t"].step == 4 and stopper.stopped["t"].reason.startswith("degraded")


def test_a_result_with_the_metric_but_no_step_at_all_raises_naming_the_keys():
    stopper = OptunaPrunerStopper()
    with pytest.raises(KeyError, match="neither 'evaluation' nor Tune's 'training_iteration'"):
        stopper("t", {"dse": 0.5})


def bare_dse_trainable(config):
    from ray import tune

    for value in FALLING:
        tune.report({"dse": value})  # no "evaluation" key


@pytest.mark.slow
def test_tune_stops_a_trainable_that_reports_a_bare_dse(ray_session, tmp_path):
    from ray import tune

    stopper = OptunaPrunerStopper()
    tuner = tune.Tuner(
        bare_dse_trainable,
        run_config=tune.RunConfig(name="bare", storage_path=str(tmp_path), stop=stopper, verbose=0),
    )
    (result,) = tuner.fit()
    assert result.metrics["training_iteration"] == 5, "stopped at the 5th report (step 4), not run to the end"
    (record,) = stopper.stopped.values()
    assert record.step == 4 and record.reason.startswith("degraded")


# --------------------------------------------------------------------------- the run folder


def test_a_stop_is_recorded_in_the_run_folder_the_result_names(tmp_path):
    write_run(tmp_path, RunRecord.from_values("t", [0.2, 0.5, 0.3]))
    mark_run_stopped("t", {"run_dir": str(tmp_path), "epoch": 2}, "degraded at evaluation 2")
    run = read_run(tmp_path)
    assert run.stopped_early and run.stop_reason == "stopped by the sweep's pruner: degraded at evaluation 2"
    assert (tmp_path / CURVE_PLOT).stat().st_size > 0


def test_the_default_stopper_marks_the_run_folder_it_stops(tmp_path):
    write_run(tmp_path, RunRecord.from_values("t", list(RISE_PEAK_FALL[:10])))
    stopper = OptunaPrunerStopper()
    stops = [stopper("t", {"evaluation": i, "dse": v, "run_dir": str(tmp_path)}) for i, v in enumerate(RISE_PEAK_FALL[:10])]
    assert stops.index(True) == 9
    assert read_run(tmp_path).stop_reason == f"stopped by the sweep's pruner: {stopper.stopped['t'].reason}"
    assert OptunaPrunerStopper(on_stop=None).on_stop is None


def test_a_stop_without_a_readable_run_folder_only_warns(tmp_path):
    mark_run_stopped("t", {"epoch": 2}, "no run folder reported")  # nothing to record
    with pytest.warns(UserWarning, match="cannot mark trial t as stopped: no readable history in"):
        mark_run_stopped("t", {"run_dir": str(tmp_path), "epoch": 2}, "degraded")
