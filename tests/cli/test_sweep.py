"""``dse-tune sweep``: argument errors (no Ray), and an interrupted sweep resumed by the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from dse_tune.cli import main
from dse_tune.runs import HISTORY_FILE, TUNER_STATE_FILE
from tests.sweep_helpers import REPO_ROOT, ray_worker_environment, write_space


def test_the_module_imports_no_heavy_framework():
    # `dse-tune --help` imports every subcommand module; Ray, Optuna and Lightning load
    # only when a sweep runs (torch comes with the dse_tune package itself).
    code = (
        "import sys, dse_tune.cli.sweep, dse_tune.cli.demo; "
        "print([m for m in ('ray', 'optuna', 'lightning', 'dse_tune.search_space') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep"], "the search space is missing: dse-tune sweep SPACE.yaml (or --resume RUN_DIR)"),
        (["sweep", "a.yaml", "--resume", "somewhere"], "give either SPACE.yaml or --resume RUN_DIR, not both"),
        (["sweep", "--resume", "x", "--out", "y"], "--out cannot move a sweep being resumed"),
    ],
)
def test_argument_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_resume_needs_a_sweep_folder(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert f"--resume {tmp_path}: not a sweep folder (no tuner.pkl)" in capsys.readouterr().err


def test_a_bad_space_is_refused_before_ray_starts(tmp_path, capsys):
    space = tmp_path / "bad.yaml"
    space.write_text("pretrain:\n  lr: {loguniform: [0.0, 1.0]}\n")
    assert main(["sweep", str(space)]) == 2
    assert f"{space}: pretrain.lr: loguniform needs 0 < low" in capsys.readouterr().err


def test_an_existing_sweep_is_not_overwritten(tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / TUNER_STATE_FILE).write_bytes(b"")
    assert main(["sweep", str(space), "--out", str(tmp_path / "out")]) == 2
    assert f"continue it with --resume {tmp_path / 'out'}" in capsys.readouterr().err


def test_the_default_sweep_folder_is_storage_path_slash_name(tmp_path, capsys):
    space = write_space(tmp_path / "named.yaml", storage={"path": str(tmp_path / "store")})
    (tmp_path / "store" / "named").mkdir(parents=True)
    (tmp_path / "store" / "named" / TUNER_STATE_FILE).write_bytes(b"")
    assert main(["sweep", str(space)]) == 2
    assert f"{tmp_path / 'store' / 'named'} already holds a sweep" in capsys.readouterr().err


# --------------------------------------------------------------------------- interrupt + resume


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray_worker_environment()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def trials(sweep_dir: Path) -> dict[str, dict]:
    """trial id -> {"trial": trial.json, "history": the run's history} of every run folder."""
    runs = sweep_dir / "runs"
    if not runs.is_dir():
        return {}
    return {
        run.name: {"trial": read_json(run / "trial.json"), "history": read_json(run / HISTORY_FILE)}
        for run in runs.iterdir()
    }


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dse_tune.cli", "sweep", *args, "--quiet", "--no-rescore"]


class HoldAfterFirstFinished(pl.Callback):
    """Hold a trial at the start of epoch 1 once another trial of the sweep has finished.

    So the interrupt surely lands while one trial is done and the next one is running
    (it has reported epoch 0), however fast or slow the machine is.
    """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != 1:
            return
        run_dir = Path(trainer.default_root_dir)
        siblings = [read_json(p / "trial.json") for p in run_dir.parent.iterdir() if p != run_dir]
        if any(s.get("status") == "finished" for s in siblings):
            time.sleep(600)  # until the sweep is interrupted


# The interrupted sweep: what `dse-tune sweep` runs, plus the holding callback.
INTERRUPTED_SWEEP = """
import sys
from pathlib import Path
from dse_tune.cli.sweep import execute
from dse_tune.search_space import load_search_space
from tests.cli.test_sweep import HoldAfterFirstFinished
space, out, address = sys.argv[1:]
sys.exit(execute(load_search_space(space), Path(out), address=address, rescore=False, progress=False,
                 trial_callbacks=(HoldAfterFirstFinished(),)))
"""


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_address, tmp_path):
    space = write_space(
        tmp_path / "resume.yaml",
        pretrain={"epochs": 3, "dse_beta": {"grid": [0.0, 0.1]}},
        search={"max_concurrent_trials": 1},
        pruner=None,
        storage={"max_failures": 0},
    )
    sweep_dir = tmp_path / "sweep"
    environment = {**os.environ, "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    first = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_SWEEP, str(space), str(sweep_dir), ray_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=REPO_ROOT,
    )
    # Interrupt (Ctrl-C) once one trial has finished and the next has reported.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and first.poll() is None:
        state = trials(sweep_dir)
        finished = [t for t, s in state.items() if s["trial"].get("status") == "finished"]
        # Tune has taken the running trial's first report (and its checkpoint).
        running = [
            t
            for t, s in state.items()
            if s["trial"].get("status") == "running"
            and any(p.read_text().strip() for p in sweep_dir.glob(f"*{t}*/result.json"))
        ]
        if finished and running:
            break
        time.sleep(0.2)
    assert first.poll() is None, f"the sweep ended before it could be interrupted:\n{first.communicate()[0]}"
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 130, output
    assert f"continue it with: dse-tune sweep --resume {sweep_dir.resolve()}" in output
    # The interruption is not pruning: nothing counted as saved, the trial named interrupted.
    assert "(0% saved by pruning); 0 of 2 trials stopped early; 1 interrupted" in output
    interrupted_summary = read_json(sweep_dir / "sweep_summary.json")
    assert interrupted_summary["trial_epochs_saved_by_pruning"] == 0
    assert len(interrupted_summary["interrupted_trials"]) == 1

    before = trials(sweep_dir)
    finished_before = {t: s for t, s in before.items() if s["trial"].get("status") == "finished"}
    interrupted = [t for t, s in before.items() if s["trial"].get("status") == "running"]
    assert len(finished_before) == 1 and len(interrupted) == 1
    files_before = {t: (sweep_dir / "runs" / t / HISTORY_FILE).read_bytes() for t in finished_before}

    resumed = subprocess.run(
        sweep_command("--resume", str(sweep_dir), "--address", ray_address),
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO_ROOT,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    after = trials(sweep_dir)
    assert len(after) == 2  # no trial was added or run twice
    for trial_id, state in after.items():
        assert state["trial"]["status"] == "finished", trial_id
        assert [e["epoch"] for e in state["history"]["evaluations"]] == [0, 1, 2], trial_id
    for trial_id in finished_before:  # kept as they were, not rerun
        assert len(after[trial_id]["trial"]["attempts"]) == 1
        assert (sweep_dir / "runs" / trial_id / HISTORY_FILE).read_bytes() == files_before[trial_id]
    attempts = after[interrupted[0]]["trial"]["attempts"]
    assert len(attempts) == 2 and attempts[1]["resumed_from_evaluation"] is not None
    summary = read_json(sweep_dir / "sweep_summary.json")
    assert summary["complete"] and summary["trial_epochs_run"] == 6
    assert len(read_json(sweep_dir / "selection.json")["trials"]) == 2
    assert "trial-epochs run: 6 of 6 without pruning (0% saved by pruning)" in resumed.stdout
    assert summary["trial_epochs_saved_by_pruning"] == 0 and summary["interrupted_trials"] == []
