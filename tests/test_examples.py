"""Every script in examples/ runs: the quick ones through their ``main`` with tiny settings,
the whole-pipeline ones (an Optuna study, a Ray Tune sweep) as a user runs them, marked slow."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from dse_tune.runs import read_run

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: Scripts this file runs; every other example must be run by another test file.
RUN_HERE = {"plain_pytorch_loop.py", "optuna_own_objective.py", "optuna_study.py", "ray_tune_sweep.py"}


def _run_script(name: str, *arguments: str) -> str:
    """Run ``examples/NAME`` as a user would (a fresh process, one torch thread); its stdout."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *arguments],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_every_example_is_run_by_a_test():
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    others = [p for p in (REPO / "tests").rglob("test_*.py") if p.name != Path(__file__).name]
    named_elsewhere = {
        name for name in scripts if any(re.search(rf"\b{re.escape(name)}\b", p.read_text()) for p in others)
    }
    assert RUN_HERE <= scripts
    assert scripts - RUN_HERE - named_elsewhere == set(), "examples no test runs"


@pytest.mark.usefixtures("one_torch_thread")
def test_plain_pytorch_loop_example_runs_and_selects(tmp_path):
    namespace = runpy.run_path(str(EXAMPLES / "plain_pytorch_loop.py"), run_name="example")
    result = namespace["main"](out_dir=tmp_path, epochs=3, num_images=32, probe_size=16)
    run = read_run(tmp_path)
    assert len(run.evaluations) == 3 and all(run.checkpoint_path(e).is_file() for e in run.evaluations)
    assert result["best_checkpoint"] is not None and Path(result["best_checkpoint"]).is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_optuna_own_objective_completes_trials_with_their_peak(tmp_path):
    import optuna

    namespace = runpy.run_path(str(EXAMPLES / "optuna_own_objective.py"), run_name="example")
    # warmup=1, patience=1 prunes nearly at once: trials still complete, with their peak
    study = namespace["main"](out_dir=tmp_path, trials=2, epochs=3, num_images=32, probe_size=16, warmup=1, patience=1)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        run = read_run(tmp_path / f"trial_{trial.number}")
        assert trial.value == pytest.approx(run.peak.value)


@pytest.mark.slow
def test_optuna_study_example_selects_a_checkpoint(tmp_path):
    output = _run_script("optuna_study.py", "--out", str(tmp_path / "study"), "--trials", "2")
    chosen = re.search(r"^checkpoint: (.+)$", output, flags=re.MULTILINE)
    assert chosen and Path(chosen[1]).is_file(), output
    assert (tmp_path / "study" / "optuna.log").is_file()


@pytest.mark.slow
def test_ray_tune_sweep_example_selects_a_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    output = _run_script("ray_tune_sweep.py", "--out", str(sweep))
    chosen = re.search(r"^chosen checkpoint: (\S+) \(beta", output, flags=re.MULTILINE)
    assert chosen and Path(chosen[1]).is_file(), output
    assert (sweep / "selection.json").is_file() and (sweep / "selection.png").is_file()
