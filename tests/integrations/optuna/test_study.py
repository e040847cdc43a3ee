"""Shared studies: storage, the stored objective and pruner, joining from another process.

Workers as separate processes (the ``dse-tune optuna-worker`` command) are tested in
tests/cli/test_optuna_worker.py.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

import dse_tune.integrations.optuna.study as study_module
from dse_tune.integrations.optuna import (
    DSEDegradationPruner,
    DSEObjective,
    create_dse_study,
    load_dse_study,
    objective_from_spec,
    objective_to_spec,
    open_storage,
    run_worker,
)
from tests import tiny_configs

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = tiny_configs.TINY_DINO
QUIET = {"logger": False, "accelerator": "cpu"}


def lr_space():
    return {"lr": FloatDistribution(1e-4, 1e-3, log=True)}


def test_study_storage_round_trip_and_mismatch(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {**lr_space(), "dse_beta": CategoricalDistribution([0.0, 0.1]), "epochs": 3}
    objective = DSEObjective(TINY, space, tmp_path / "runs", pretrain_kwargs=QUIET)
    pruner = DSEDegradationPruner(warmup=2, patience=1)
    create_dse_study(objective, storage=storage, study_name="s", pruner=pruner)

    study, loaded = load_dse_study(storage, "s")
    assert objective_to_spec(loaded) == objective_to_spec(objective)
    assert loaded.search_space == space and loaded.out_root == tmp_path / "runs"
    assert isinstance(study.pruner, DSEDegradationPruner) and study.pruner.rule == pruner.rule
    # Reopening with the same settings joins; with other settings it refuses.
    create_dse_study(objective, storage=storage, study_name="s", pruner=pruner)
    with pytest.raises(ValueError, match="already exists with a different objective or pruner"):
        create_dse_study(objective, storage=storage, study_name="s")
    with pytest.raises(
        ValueError, match=r"no study 'missing' in the storage; studies there: \['s'\]"
    ):
        load_dse_study(storage, "missing")


def test_open_storage_takes_urls_paths_and_storages(tmp_path):
    assert open_storage(None) is None
    sqlite = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(sqlite, optuna.storages.RDBStorage) and open_storage(sqlite) is sqlite
    journal = open_storage(tmp_path / "new" / "study.log")  # parent folder created
    assert isinstance(journal, optuna.storages.JournalStorage)
    with pytest.raises(TypeError, match="a file path or an optuna storage, got int"):
        open_storage(3)


def test_a_worker_needs_a_stored_objective_and_a_budget(tmp_path):
    storage = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(storage=storage, study_name="plain")
    with pytest.raises(ValueError, match="study 'plain' holds no DSEObjective"):
        load_dse_study(storage, "plain")
    with pytest.raises(ValueError, match="an in-memory study cannot be joined"):
        load_dse_study(None, "plain")
    with pytest.raises(ValueError, match="give n_trials or timeout"):
        run_worker(storage, "plain")


def test_another_pruner_must_be_passed_again(tmp_path):
    storage = tmp_path / "study.log"
    objective = DSEObjective(TINY, lr_space(), tmp_path / "runs")
    create_dse_study(objective, storage=storage, study_name="m", pruner=optuna.pruners.MedianPruner())
    with pytest.raises(ValueError, match="created with a optuna.pruners._median.MedianPruner pruner"):
        load_dse_study(storage, "m")
    study, _ = load_dse_study(storage, "m", pruner=optuna.pruners.NopPruner())
    assert isinstance(study.pruner, optuna.pruners.NopPruner)


def test_objective_spec_refuses_what_another_process_cannot_rebuild(tmp_path):
    with pytest.raises(ValueError, match="data is a object object, which other processes cannot"):
        objective_to_spec(DSEObjective(TINY, lr_space(), tmp_path, data=object()))
    with pytest.raises(ValueError, match="Lightning callbacks cannot be shared"):
        objective_to_spec(DSEObjective(TINY, lr_space(), tmp_path, callbacks=[object()]))
    with pytest.raises(ValueError, match="not a DSEObjective description"):
        objective_from_spec({"format": 99})
    space = "tests.integrations.optuna.test_study:lr_space"  # an importable function
    rebuilt = objective_from_spec(objective_to_spec(DSEObjective(TINY, space, tmp_path)))
    assert rebuilt.search_space == space


def test_a_worker_that_loses_a_queued_trial_to_another_worker_warns_and_goes_on(tmp_path, monkeypatch):
    # What SQLite allows (it cannot lock a trial): another worker tells the same queued
    # trial while this one still runs it; this worker's own tell then fails.
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="raced", direction="maximize")
    study.enqueue_trial({"x": 1.0})

    def objective(trial):
        trial.suggest_float("x", 0.0, 2.0)
        if trial.number == 0:  # the other worker tells the queued trial first
            optuna.load_study(study_name="raced", storage=storage).tell(trial.number, 1.0)
        return 2.0

    monkeypatch.setattr(study_module, "load_dse_study", lambda *args, **kwargs: (study, objective))
    with pytest.warns(RuntimeWarning, match="another worker finished a queued trial .*Cannot tell a COMPLETE"):
        study_module.run_worker(storage, "raced", n_trials=1)
    raced, own = study.trials
    assert raced.state == optuna.trial.TrialState.COMPLETE and raced.value == 1.0  # the first tell stands
    assert own.state == optuna.trial.TrialState.COMPLETE and own.value == 2.0  # then this worker's own trial
