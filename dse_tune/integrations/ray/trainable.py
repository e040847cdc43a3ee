"""The Tune trainable of a sweep: one DSE-monitored pretraining run per trial.

:func:`pretrain_trainable` runs :func:`dse_tune.ssl.pretrain.pretrain` in the trial's
run folder ``SWEEP_DIR/runs/<trial_id>`` (:func:`run_dir_of_trial`), so that
:func:`dse_tune.runs.load_sweep` reads the sweep folder directly, with a
:class:`~dse_tune.integrations.ray.reporter.TuneReporter` listening to the run. It keeps
the trial's own bookkeeping in :data:`TRIAL_FILE` (attempts, nodes, final status);
:func:`mark_run_stopped` records there, and in the run's history, that the sweep's
stopper ended the trial.

Fault tolerance: a trial whose worker dies is restarted by Tune (``max_failures``) from
its latest checkpoint; :func:`pretrain_trainable` resumes ``pretrain(...,
resume_from=...)`` from it, which restores the DSE history up to that evaluation, so no
evaluation is lost or duplicated.

Example:
    >>> import tempfile
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> read_trial_state(run_dir) is None  # no attempt yet
    True
    >>> write_json(run_dir / TRIAL_FILE, {"status": "running", "attempts": []})
    >>> read_trial_state(run_dir)["status"]
    'running'
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from dse_tune.atomic import atomic_write_text
from dse_tune.integrations.ray.reporter import (
    CHECKPOINT_FILE,
    CHECKPOINT_STATE_FILE,
    STAGING_PREFIX,
    TuneReporter,
    node_id,
)
from dse_tune.runs import CURVE_PLOT, SWEEP_RUNS_DIR, mark_stopped

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "RUNS_DIR",
    "TRIAL_FILE",
    "mark_run_stopped",
    "pretrain_trainable",
    "read_trial_state",
    "run_dir_of_trial",
]

#: Run folders of a sweep's trials: ``SWEEP_DIR/runs/<trial_id>``.
RUNS_DIR = SWEEP_RUNS_DIR
#: Per-trial bookkeeping in the run folder (attempts, nodes, final status).
TRIAL_FILE = "trial.json"
#: A Tune checkpoint restored into the run folder for a resumed attempt.
RESUME_PREFIX = ".resume_"


def run_dir_of_trial(context: Any = None) -> Path:
    """The run folder of the current trial: ``SWEEP_DIR/runs/<trial_id>``.

    With a non-local storage (``s3://...``) the trial's local working directory is used
    instead (the selector then cannot read it from the driver).
    """
    context = context or tune.get_context()
    storage = context.get_storage()
    filesystem = getattr(storage, "storage_filesystem", None)
    if filesystem is None or type(filesystem).__name__ == "LocalFileSystem":
        return Path(storage.experiment_fs_path) / RUNS_DIR / context.get_trial_id()
    return Path(storage.trial_working_directory) / "run"


def pretrain_trainable(
    sampled: Mapping[str, Any],
    *,
    base_config: Mapping[str, Any],
    data: str | None = None,
    accelerator: str = "auto",
    callbacks: Sequence[pl.Callback] = (),
) -> None:
    """Tune function trainable: one DSE-monitored pretraining run per trial.

    Args:
        sampled: the trial's sampled settings (Tune's ``config``), merged over
            ``base_config`` into a :class:`~dse_tune.ssl.config.PretrainConfig`.
        base_config: the sweep's fixed PretrainConfig fields.
        data: overrides the config's ``data`` (``"synthetic"`` or a folder).
        accelerator: Lightning accelerator (``"gpu"`` when the trial holds GPUs).
        callbacks: extra Lightning callbacks of every trial.

    Use it through :func:`~dse_tune.integrations.ray.sweep.build_tuner`, or directly:

    >>> trainable = tune.with_parameters(pretrain_trainable, base_config={"epochs": 4})  # doctest: +SKIP
    """
    import logging

    from dse_tune.ssl.pretrain import pretrain

    # Lightning's per-fit banners and Ray's per-checkpoint lines from every trial would
    # bury Tune's progress table.
    for name in ("lightning.pytorch", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = tune.get_context()
    run_dir = run_dir_of_trial(context)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Folders staged by an attempt that was killed (one attempt runs at a time).
    for stale in [*run_dir.glob(f"{STAGING_PREFIX}*"), *run_dir.glob(f"{RESUME_PREFIX}*")]:
        shutil.rmtree(stale, ignore_errors=True)
    checkpoint = tune.get_checkpoint()
    trial_state = read_trial_state(run_dir) or {"trial_id": context.get_trial_id(), "attempts": []}

    with tempfile.TemporaryDirectory(prefix=RESUME_PREFIX, dir=run_dir) as restore_dir:
        resume_from = None
        resumed_evaluation = None
        if checkpoint is not None:
            # A copy: Tune may delete the checkpoint once newer ones are kept.
            checkpoint.to_directory(restore_dir)
            resume_from = Path(restore_dir) / CHECKPOINT_FILE
            state = read_json(Path(restore_dir) / CHECKPOINT_STATE_FILE) or {}
            resumed_evaluation = (state.get("evaluation") or {}).get("index")
        trial_state["status"] = "running"
        trial_state["attempts"].append(_attempt(len(trial_state["attempts"]) + 1, resumed_evaluation))
        _write_trial_state(run_dir, trial_state)

        result = pretrain(
            {**base_config, **sampled},
            run_dir,
            data=data,
            callbacks=list(callbacks),
            listeners=[TuneReporter(run_dir, send_history=resume_from is not None)],
            resume_from=resume_from,
            enable_progress_bar=False,
            accelerator=accelerator,
        )

    trial_state.update(
        status="stopped" if result.stopped_early else "finished",
        epochs_completed=int(result.epochs_completed),
        stop_reason=result.stop_reason,
        finished=time.time(),
    )
    _write_trial_state(run_dir, trial_state)


def _attempt(number: int, resumed_evaluation: int | None) -> dict[str, Any]:
    return {
        "attempt": number,
        "node_id": node_id(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "resumed_from_evaluation": resumed_evaluation,
    }


def mark_run_stopped(trial_id: str, result: Mapping[str, Any], reason: str) -> None:
    """``on_stop`` hook of a sweep's stopper: record in the trial's run folder that it stopped.

    Marks the run's history stopped early (:func:`dse_tune.runs.mark_stopped`; the
    selector shows it, the run's candidates stay selectable), sets the status in
    :data:`TRIAL_FILE` and draws the DSE curve (the trial is killed before its own
    end-of-fit plot).
    """
    run_dir = result.get("run_dir")
    if not run_dir:
        return
    run_dir = Path(run_dir)
    # This runs inside Tune's control loop: a failure here must not end the sweep.
    try:
        run = mark_stopped(run_dir, f"stopped by the sweep's pruner: {reason}")
    except (OSError, ValueError) as error:
        warnings.warn(
            f"cannot mark trial {trial_id} as stopped: no readable history in {run_dir} "
            f"(is the storage shared with the driver?): {error}",
            stacklevel=2,
        )
        return
    trial_state = read_trial_state(run_dir) or {"trial_id": trial_id, "attempts": []}
    epoch = result.get("epoch")
    trial_state.update(
        status="stopped",
        stop_reason=reason,
        epochs_completed=None if epoch is None else int(epoch) + 1,
        finished=time.time(),
    )
    try:
        _write_trial_state(run_dir, trial_state)
        if run.evaluations:
            from dse_tune.plotting import plot_dse_history

            plot_dse_history(run, run_dir / CURVE_PLOT)
    except Exception as error:  # noqa: BLE001 (bookkeeping only; the stop itself stands)
        warnings.warn(f"could not record the stop of trial {trial_id} in {run_dir}: {error}", stacklevel=2)


def read_trial_state(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The trial's :data:`TRIAL_FILE`, or None when it is missing or unreadable."""
    return read_json(Path(run_dir) / TRIAL_FILE)


def _write_trial_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    write_json(run_dir / TRIAL_FILE, state)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
