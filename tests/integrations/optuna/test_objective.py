"""DSEObjective: one tiny pretraining run per trial, the peak DSE as a COMPLETE value.

Runs are tiny (ViT depth 2, dim 64, 32 px, 16 synthetic images, 2 steps per epoch).
Where the exact stopping point matters, the DSE values are scripted by replacing
``dse_tune.dse`` (which the run's DSE monitor calls); the rest uses the real score.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

import dse_tune.metrics.tolerant
from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.integrations.optuna import (
    DSEDegradationPruner,
    DSEObjective,
    objective_to_spec,
    peak_value_and_step,
)
from dse_tune.runs import read_run as load_run
from tests import tiny_configs

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = tiny_configs.TINY_DINO
QUIET = {"logger": False, "accelerator": "cpu"}
# Rises to 0.9 at evaluation 2, then falls for good.
RISE_AND_FALL = [0.2, 0.6, 0.9, 0.7, 0.5, 0.4, 0.3, 0.2]


class ScriptedDSE:
    """Stands in for ``dse_tune.dse``: returns the scripted scores in order."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0

    def __call__(self, tokens, **settings):
        value = self.values[self.calls]
        self.calls += 1
        return SimpleNamespace(score=value, inter=value, intra_image=0.0, intra_batch=0.0, dim=0.0)


@pytest.fixture
def scripted(monkeypatch):
    def install(values):
        scorer = ScriptedDSE(values)
        monkeypatch.setattr(dse_tune.metrics.tolerant, "dse", scorer)  # where the tracker scores
        return scorer

    return install


def lr_space():
    return {"lr": FloatDistribution(1e-4, 1e-3, log=True)}


def test_pruned_run_completes_with_its_peak(scripted, tmp_path):
    scorer = scripted(RISE_AND_FALL)
    rule = DegradationRule(warmup=3, patience=2, min_drop=0.1)
    stop_index = first_stop_index(RISE_AND_FALL, rule)
    assert stop_index == 4  # peak 0.9 at 2; 0.7 and 0.5 are 2 in a row >= 10% of the range below
    objective = DSEObjective({**TINY, "epochs": 8}, lr_space(), tmp_path, pretrain_kwargs=QUIET)
    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner(rule))
    study.optimize(objective, n_trials=1)

    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE  # not PRUNED: it is best_trial with its peak
    assert study.best_trial.number == trial.number and trial.value == 0.9
    assert scorer.calls == stop_index + 1  # training stopped right at the pruning evaluation
    assert trial.intermediate_values == {i: RISE_AND_FALL[i] for i in range(stop_index + 1)}
    assert peak_value_and_step(trial) == (0.9, 2)

    attrs = trial.user_attrs
    assert (attrs["peak_dse"], attrs["peak_epoch"], attrs["peak_evaluation"]) == (0.9, 2, 2)
    assert attrs["peak_checkpoint"].endswith("checkpoints/epoch=0002.ckpt")
    assert Path(attrs["peak_checkpoint"]).is_file()
    assert (attrs["evaluations"], attrs["epochs_run"]) == (5, 5)
    assert attrs["stopped_early"] is True and attrs["stopped_by"] == "pruner"
    assert attrs["stop_reason"].startswith("pruned: degraded")
    # The run folder tells the same story to the selector.
    run = load_run(attrs["run_dir"])
    assert Path(attrs["run_dir"]) == tmp_path / study.study_name / "trial_0000"
    assert run.stopped_early and run.stop_reason == attrs["stop_reason"]
    assert run.dse == RISE_AND_FALL[:5]


def test_the_runs_own_degradation_rule_stops_it_too(scripted, tmp_path):
    scripted(RISE_AND_FALL)
    config = {**TINY, "epochs": 8, "early_stop": True, "degradation": {"warmup": 3, "patience": 2}}
    objective = DSEObjective(config, lr_space(), tmp_path, pretrain_kwargs=QUIET)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.9)
    assert trial.user_attrs["stopped_by"] == "degradation rule"
    assert trial.user_attrs["stop_reason"].startswith("degraded")
    assert trial.user_attrs["epochs_run"] == 5
    assert len(trial.intermediate_values) == 5  # still reported, although nothing prunes


@pytest.mark.slow
def test_any_optuna_pruner_can_stop_the_run(scripted, tmp_path):
    scripted([0.6, 0.4, 0.9, 0.8])
    objective = DSEObjective({**TINY, "epochs": 4}, lr_space(), tmp_path, pretrain_kwargs=QUIET)
    pruner = optuna.pruners.ThresholdPruner(lower=0.5)  # prunes at the first value below 0.5
    study = optuna.create_study(direction="maximize", pruner=pruner)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert (trial.state, trial.value, trial.user_attrs["epochs_run"]) == (TrialState.COMPLETE, 0.6, 2)
    assert trial.user_attrs["stop_reason"] == "pruned by ThresholdPruner after evaluation 1 (DSE 0.4)"


def test_a_real_run_returns_the_best_dse_of_its_history(tmp_path):
    objective = DSEObjective(TINY, lr_space(), tmp_path, pretrain_kwargs=QUIET)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    history = json.loads((Path(trial.user_attrs["run_dir"]) / "dse_history.json").read_text())
    values = [row["dse"] for row in history["evaluations"]]
    assert trial.state == TrialState.COMPLETE and len(values) == TINY["epochs"]
    assert all(math.isfinite(v) for v in values)
    assert trial.value == max(values)
    assert trial.intermediate_values == dict(enumerate(values))
    assert trial.user_attrs["stopped_early"] is False and trial.user_attrs["stopped_by"] is None
    assert Path(trial.user_attrs["peak_checkpoint"]).is_file()
    assert 1e-4 <= trial.params["lr"] <= 1e-3
    assert (
        json.loads((Path(trial.user_attrs["run_dir"]) / "config.json").read_text())["lr"]
        == trial.params["lr"]
    )


def test_a_failing_trial_fails_alone(tmp_path):
    def space(trial):  # a function search space: any trial.suggest_* calls
        return {
            "batch_size": trial.suggest_categorical("batch_size", [8, 64]),
            "eval_every_n_epochs": trial.suggest_categorical("eval_every_n_epochs", [1, 5]),
        }

    objective = DSEObjective(TINY, space, tmp_path, pretrain_kwargs=QUIET)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"batch_size": 64, "eval_every_n_epochs": 1})  # more than 16 images
    study.enqueue_trial({"batch_size": 8, "eval_every_n_epochs": 5})  # never evaluates in 2 epochs
    study.enqueue_trial({"batch_size": 8, "eval_every_n_epochs": 1})
    study.optimize(objective, n_trials=3, catch=(Exception,))
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "batch_size (64) exceeds the 16 images" in study.trials[0].user_attrs["error"]
    assert "made no DSE evaluation" in study.trials[1].user_attrs["error"]
    assert study.best_trial.number == 2


def test_arguments_are_checked_with_clear_messages(tmp_path):
    with pytest.raises(ValueError, match=r"unknown PretrainConfig field\(s\) \['learning_rate'\]"):
        DSEObjective(TINY, {"learning_rate": FloatDistribution(0.1, 1.0)}, tmp_path)
    with pytest.raises(
        TypeError, match=r"pretrain_kwargs: unknown or reserved argument\(s\) \['data'\]"
    ):
        DSEObjective(TINY, lr_space(), tmp_path, pretrain_kwargs={"data": "x"})
    objective = DSEObjective(TINY, lr_space(), tmp_path)
    study = optuna.create_study(direction="minimize")
    with pytest.raises(
        ValueError, match="must have the single direction 'maximize', got \\['minimize'\\]"
    ):
        study.optimize(objective, n_trials=1)
    with pytest.raises(ValueError, match="cannot be imported by another process"):
        objective_to_spec(DSEObjective(TINY, lambda trial: {}, tmp_path))


def test_a_first_nan_evaluation_does_not_hide_the_peak(scripted, tmp_path):
    # The run goes on past a NaN (early_stop off, a pruner that ignores NaN): the trial
    # is worth the finite peak, in its value and in every user_attr, never NaN.
    scripted([math.nan, 0.6, 0.9, 0.7])
    objective = DSEObjective({**TINY, "epochs": 4}, lr_space(), tmp_path, pretrain_kwargs=QUIET)
    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner(nan_policy="ignore"))
    with pytest.warns(Warning, match="DSE at epoch 0, step 2 is NaN"):
        study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.9)
    assert math.isnan(trial.intermediate_values[0]) and trial.intermediate_values[2] == 0.9
    attrs = trial.user_attrs
    assert (attrs["peak_dse"], attrs["peak_epoch"], attrs["peak_evaluation"]) == (0.9, 2, 2)
    assert attrs["peak_checkpoint"].endswith("checkpoints/epoch=0002.ckpt")
    assert Path(attrs["peak_checkpoint"]).is_file()
    assert attrs["evaluations"] == 4 and attrs["stopped_early"] is False
    assert peak_value_and_step(trial) == (0.9, 2)
