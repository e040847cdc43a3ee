"""The pruner: prunes exactly where the shared degradation rule stops."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import dse_tune.integrations.optuna.pruner as pruner_module
from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.integrations.optuna import (
    DSEDegradationPruner,
    ordered_intermediate_values,
    peak_value_and_step,
)
from tests.degradation_cases import DEGRADATION_CASES, RISE_PEAK_FALL, case_ids

optuna.logging.set_verbosity(optuna.logging.WARNING)


def first_pruned_index(values, pruner, direction, step_of=lambda i: 10 * i):
    """Report ``values`` one by one like a training loop; the index that prunes first."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    trial = study.ask()
    for i, value in enumerate(values):
        trial.report(value, step_of(i))
        if trial.should_prune():
            return i
    return None


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
def test_pruner_stops_where_the_rule_does(case):
    pruner = DSEDegradationPruner(case.rule)
    assert first_pruned_index(case.values, pruner, "maximize") == case.stop_index, case.why
    assert case.stop_index == first_stop_index(case.values, case.rule)


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
def test_minimize_study_sees_negated_values(case):
    # A loss-like score (-DSE) in a "minimize" study must prune at the same report.
    negated = [-v for v in case.values]
    pruner = DSEDegradationPruner(case.rule)
    assert first_pruned_index(negated, pruner, "minimize") == case.stop_index


def test_direction_decides_what_a_fall_means():
    falling = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05]
    # minimize: a falling loss improves every time -> never pruned
    assert first_pruned_index(falling, DSEDegradationPruner(), "minimize") is None
    # maximize: the same values degrade from the start -> pruned when warm-up ends
    assert first_pruned_index(falling, DSEDegradationPruner(), "maximize") == 4


def test_reports_are_read_in_step_order_not_report_order():
    pruner = DSEDegradationPruner()
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    steps = [3, 7, 8, 15, 20, 31, 40, 41, 55, 60]  # irregular, reported shuffled
    for position in (9, 2, 5, 0, 7, 3, 1, 8, 4, 6):
        trial.report(RISE_PEAK_FALL[position], steps[position])
    assert ordered_intermediate_values(trial) == list(zip(steps, RISE_PEAK_FALL[:10], strict=True))
    assert trial.should_prune()
    decision = pruner.decision(study, trial)
    assert (decision.peak_index, decision.evaluations) == (5, 10)
    assert decision.reason.startswith("degraded")


def test_decision_explains_why_not():
    pruner = DSEDegradationPruner(warmup=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    trial.report(0.5, 0)
    assert pruner.decision(study, trial).reason == "warm-up: 1 of 3 evaluations"
    assert not trial.should_prune()


def test_study_optimize_prunes_degrading_trials_only():
    curves = {
        "degrades": [0.1, 0.5, 0.9, 1.0, 0.95, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
        "keeps_rising": [0.1 * i for i in range(12)],
    }

    def objective(trial):
        curve = curves[trial.suggest_categorical("run", sorted(curves))]
        for epoch, dse in enumerate(curve):
            trial.report(dse, step=epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return peak_value_and_step(trial)[0]

    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner())
    for run in curves:
        study.enqueue_trial({"run": run})
    study.optimize(objective, n_trials=2)
    by_run = {t.params["run"]: t for t in study.trials}
    pruned = by_run["degrades"]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    # peak 1.0 at 3; 0.8, 0.7, 0.6 (5, 6, 7) are the first 3 in a row >= 10% below
    assert pruned.last_step == 7
    assert peak_value_and_step(pruned) == (1.0, 3)
    completed = by_run["keeps_rising"]
    assert completed.state == optuna.trial.TrialState.COMPLETE
    assert completed.value == pytest.approx(1.1)


def test_constructor_takes_a_rule_or_its_parameters():
    assert DSEDegradationPruner().rule == DegradationRule()
    rule = DegradationRule(warmup=2, patience=1, min_drop=0.3, smoothing=2, nan_policy="ignore")
    assert DSEDegradationPruner(rule).rule is rule
    assert (
        DSEDegradationPruner(
            warmup=2, patience=1, min_drop=0.3, smoothing=2, nan_policy="ignore"
        ).rule
        == rule
    )
    assert DSEDegradationPruner(patience=7).rule == DegradationRule(patience=7)
    assert "patience=7" in repr(DSEDegradationPruner(patience=7))
    with pytest.raises(TypeError, match=r"either rule or its parameters \(warmup\), not both"):
        DSEDegradationPruner(rule, warmup=3)
    with pytest.raises(TypeError, match="rule must be a DegradationRule, got dict"):
        DSEDegradationPruner({"warmup": 3})
    with pytest.raises(ValueError, match="patience must be an integer >= 1, got 0"):
        DSEDegradationPruner(patience=0)


def test_peak_value_and_step():
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    assert peak_value_and_step(trial) is None
    for step, value in [(0, 3.0), (1, 1.0), (2, math.nan), (3, 1.0), (4, 2.0)]:
        trial.report(value, step)
    assert peak_value_and_step(trial) == (1.0, 1)  # the live trial's study minimizes
    assert peak_value_and_step(trial, "maximize") == (3.0, 0)
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert peak_value_and_step(frozen) == (3.0, 0)  # frozen: DSE, maximize
    assert peak_value_and_step(frozen, optuna.study.StudyDirection.MINIMIZE) == (1.0, 1)
    with pytest.raises(ValueError, match="direction must be 'maximize' or 'minimize', got 'up'"):
        peak_value_and_step(frozen, "up")
    with pytest.raises(TypeError, match="must be an optuna Trial or FrozenTrial, got list"):
        ordered_intermediate_values([])


def test_the_docstring_example_completes_a_trial_with_its_peak():
    # The example must not end in "No trials are completed yet": it keeps the peak.
    assert "study.best_trial" in pruner_module.DSEDegradationPruner.__doc__
    assert "raise optuna.TrialPruned" not in pruner_module.DSEDegradationPruner.__doc__


def test_the_pruner_alone_imports_no_lightning():
    program = (
        "import sys\n"
        "from dse_tune.integrations.optuna import DSEDegradationPruner\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", program], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_reports_within_their_noise_do_not_prune():
    from dse_tune.integrations.optuna.pruner import NOISE_ATTR

    values = [0.50, 0.52, 0.51, 0.505, 0.50, 0.498]
    pruner = DSEDegradationPruner(warmup=2, patience=2)
    verdicts = {}
    for noise in (None, 0.01):
        study = optuna.create_study(direction="maximize", pruner=pruner)
        trial = study.ask()
        for step, value in enumerate(values):
            trial.report(value, step=step)
            if noise is not None:
                trial.set_user_attr(f"{NOISE_ATTR}:{step}", noise)
        verdicts[noise] = pruner.decision(study, trial)
    assert verdicts[None].stop and not verdicts[0.01].stop
