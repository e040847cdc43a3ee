"""Worker processes sharing one Optuna study, for the storage tests (sqlite, journal, PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_workers(
    command_prefix: Sequence[str], storage: str, study_name: str, n_trials_each: int, count: int = 2
) -> list[subprocess.CompletedProcess]:
    """Start ``count`` real worker processes at once (``command_prefix`` + the worker's
    flags), wait for them, and check that each exited 0."""
    # One torch thread each: the workers share a small machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [*command_prefix, "--storage", storage, "--study", study_name, "--n-trials", str(n_trials_each)]
    workers = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(command, worker.returncode, stdout, stderr))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return results
