"""``dse-tune optuna-worker`` (and ``python -m dse_tune.integrations.optuna worker``):
workers as separate processes sharing one study, and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from dse_tune.cli.main import main as dse_tune_main
from dse_tune.integrations.optuna import DSEObjective, create_dse_study, load_dse_study
from tests import tiny_configs
from tests.optuna_workers import run_workers

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = tiny_configs.TINY_DINO
QUIET = {"logger": False, "accelerator": "cpu"}


def lr_space():
    return {"lr": FloatDistribution(1e-4, 1e-3, log=True)}


def run_two_workers(storage: str, study_name: str, n_trials_each: int) -> list[subprocess.CompletedProcess]:
    # The module path users had before `dse-tune optuna-worker` keeps working (deprecated).
    return run_workers([sys.executable, "-m", "dse_tune.integrations.optuna", "worker"], storage, study_name, n_trials_each)


def check_shared_study(study, batch_sizes):
    trials = study.trials
    assert sorted(t.number for t in trials) == list(
        range(len(batch_sizes))
    )  # none lost, none twice
    assert sorted(t.params["batch_size"] for t in trials) == sorted(batch_sizes)  # each queued once
    run_dirs = set()
    for trial in trials:
        if trial.params["batch_size"] > TINY["synthetic_size"]:
            assert trial.state == TrialState.FAIL
            assert "exceeds the 16 images" in trial.user_attrs["error"]
            continue
        assert trial.state == TrialState.COMPLETE, trial.user_attrs
        assert Path(trial.user_attrs["peak_checkpoint"]).is_file()
        assert trial.value == max(trial.intermediate_values.values())
        run_dirs.add(trial.user_attrs["run_dir"])
    assert len(run_dirs) == sum(b <= TINY["synthetic_size"] for b in batch_sizes)


@pytest.mark.slow
def test_two_worker_processes_share_a_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {**lr_space(), "batch_size": CategoricalDistribution([8, 64])}
    objective = DSEObjective(TINY, space, tmp_path / "runs", pretrain_kwargs=QUIET)
    create_dse_study(objective, storage=storage, study_name="shared")
    # Sampled trials, not queued ones: SQLite cannot lock a queued trial, so two workers
    # may both run it (Optuna issues #4002, #4621; the worker's answer to that is tested
    # in tests/integrations/optuna/test_study.py). The journal and PostgreSQL tests queue.

    results = run_two_workers(storage, "shared", n_trials_each=2)

    for result in results:  # each worker ran and summarized its own two trials
        assert "'python -m dse_tune.integrations.optuna worker' is deprecated" in result.stderr
        assert len([line for line in result.stdout.splitlines() if line.startswith("trial ")]) == 2
    study, _ = load_dse_study(storage, "shared")
    check_shared_study(study, [trial.params["batch_size"] for trial in study.trials])


@pytest.mark.slow
def test_two_worker_processes_share_a_journal_file_study(tmp_path):
    journal = tmp_path / "journal" / "study.log"
    space = {**lr_space(), "batch_size": CategoricalDistribution([8, 64])}
    objective = DSEObjective({**TINY, "epochs": 1}, space, tmp_path / "runs", pretrain_kwargs=QUIET)
    study = create_dse_study(objective, storage=journal, study_name="journal")
    batch_sizes = [8, 64]
    for batch_size in batch_sizes:
        study.enqueue_trial({"batch_size": batch_size})

    run_two_workers(str(journal), "journal", n_trials_each=1)

    study, _ = load_dse_study(journal, "journal")
    check_shared_study(study, batch_sizes)


def test_worker_command_reports_bad_input(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=storage, study_name="plain")
    assert dse_tune_main(["optuna-worker", "--storage", storage, "--study", "plain", "--n-trials", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: study 'plain' holds no DSEObjective; create it with create_dse_study(..., storage=...)\n"
    )
    # neither --n-trials nor --timeout: refused before joining (was argparse's SystemExit 2)
    assert dse_tune_main(["optuna-worker", "--storage", storage, "--study", "plain"]) == 2
    assert capsys.readouterr().err == "error: give --n-trials or --timeout\n"
    with pytest.raises(SystemExit):  # argparse's own usage errors stay argparse's
        dse_tune_main(["optuna-worker", "--storage", storage, "--study", "plain", "--n-trials", "0"])


def test_dse_tune_optuna_worker_is_the_same_command(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    command = ["optuna-worker", "--storage", storage, "--study", "x", "--timeout", "1"]
    assert dse_tune_main(command) == 2
    assert capsys.readouterr().err == "error: no study 'x' in the storage; studies there: []\n"
    old_form = subprocess.run([sys.executable, "-m", "dse_tune.integrations.optuna", "serve"],
                              capture_output=True, text=True)
    assert old_form.returncode == 2  # the older form needs its "worker"
    assert "usage: python -m dse_tune.integrations.optuna worker" in old_form.stderr
