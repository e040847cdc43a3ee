"""The plain-loop and own-Optuna-objective examples run end to end (tiny settings)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from dse_tune.runs import read_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plain_pytorch_loop_example_runs_and_selects(tmp_path):
    namespace = runpy.run_path(str(REPO / "examples" / "plain_pytorch_loop.py"), run_name="example")
    result = namespace["main"](out_dir=tmp_path, epochs=3, num_images=32, probe_size=16)
    run = read_run(tmp_path)
    assert len(run.evaluations) == 3 and all(run.checkpoint_path(e).is_file() for e in run.evaluations)
    assert result["best_checkpoint"] is not None and Path(result["best_checkpoint"]).is_file()


def test_optuna_own_objective_completes_trials_with_their_peak(tmp_path):
    import optuna

    namespace = runpy.run_path(str(REPO / "examples" / "optuna_own_objective.py"), run_name="example")
    # warmup=1, patience=1 prunes nearly at once: trials still complete, with their peak
    study = namespace["main"](out_dir=tmp_path, trials=2, epochs=3, num_images=32, probe_size=16, warmup=1, patience=1)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        run = read_run(tmp_path / f"trial_{trial.number}")
        assert trial.value == pytest.approx(run.peak.value)
