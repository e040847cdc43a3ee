"""A study shared through a real PostgreSQL server, the storage of studies spread over machines.

The suite starts the server itself (tests/postgres_server.py: Debian's ``postgresql``
package, which ``make test`` installs when missing). Where it cannot start, the tests skip
and say what is missing; with ``DSE_TUNE_REQUIRE_POSTGRES=1`` they fail instead, so a CI
that means to test PostgreSQL cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from dse_tune.integrations.optuna import DSEObjective, create_dse_study, load_dse_study
from tests import tiny_configs
from tests.optuna_workers import run_workers
from tests.postgres_server import PostgresUnavailable, start_postgres

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {**tiny_configs.TINY_DINO, "epochs": 1}
QUIET = {"logger": False, "accelerator": "cpu"}
TRIALS_PER_WORKER = 2


@pytest.fixture(scope="module")
def postgres_url():
    """The storage URL of a database on a server started for this module, then removed."""
    try:
        pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'psycopg[binary]'")
        server = start_postgres()
    except PostgresUnavailable as error:
        if os.environ.get("DSE_TUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required (DSE_TUNE_REQUIRE_POSTGRES=1): {error}")
        pytest.skip(f"cannot start a PostgreSQL server: {error}")
    with server:
        yield server.url


def dse_tune_command() -> list[str]:
    """The installed ``dse-tune`` script beside this Python, else the same entry point."""
    script = Path(sys.executable).with_name("dse-tune")
    if script.is_file():
        return [str(script)]
    found = shutil.which("dse-tune")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from dse_tune.cli.main import main; sys.exit(main())"]


@pytest.mark.slow
def test_two_worker_processes_share_a_postgres_study(postgres_url, tmp_path):
    space = {"lr": FloatDistribution(1e-4, 1e-3, log=True)}
    objective = DSEObjective(TINY, space, tmp_path / "runs", pretrain_kwargs=QUIET)
    create_dse_study(objective, storage=postgres_url, study_name="shared-postgres")

    results = run_workers([*dse_tune_command(), "optuna-worker"], postgres_url, "shared-postgres", TRIALS_PER_WORKER)

    for result in results:  # each worker ran and summarized its own trials
        lines = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
        assert len(lines) == TRIALS_PER_WORKER, result.stdout
    study, loaded = load_dse_study(postgres_url, "shared-postgres")
    assert loaded.out_root == tmp_path / "runs"
    trials = study.trials
    total = 2 * TRIALS_PER_WORKER
    assert sorted(t.number for t in trials) == list(range(total))  # none lost, none twice
    assert [t.state for t in trials] == [TrialState.COMPLETE] * total, [t.user_attrs for t in trials]
    run_dirs = {trial.user_attrs["run_dir"] for trial in trials}
    assert len(run_dirs) == total  # each trial its own run folder
    for trial in trials:
        assert Path(trial.user_attrs["run_dir"]).is_dir()
        assert Path(trial.user_attrs["peak_checkpoint"]).is_file()
        assert trial.value == max(trial.intermediate_values.values())


@pytest.mark.slow
def test_joining_a_missing_postgres_study_names_the_studies_there(postgres_url):
    with pytest.raises(ValueError, match=r"no study 'absent' in the storage; studies there: \["):
        load_dse_study(postgres_url, "absent")
