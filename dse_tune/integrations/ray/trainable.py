"""The Tune trainable of a sweep: one DSE-monitored pretraining run per trial.

:func:`pretrain_trainable` runs :func:`dse_tune.ssl.pretrain.pretrain` in the trial's
run folder ``SWEEP_DIR/runs/<trial_id>`` (:func:`run_dir_of_trial`), so that
:func:`dse_tune.runs.load_sweep` reads the sweep folder directly, with a
:class:`~dse_tune.integrations.ray.reporter.TuneReporter` listening to the run. It keeps
the trial's own bookkeeping in :data:`TRIAL_FILE` (attempts, nodes, final status);
:func:`mark_run_stopped` records there, and in the run's history, that the sweep's
stopper ended the trial.

Fault tolerance: a trial whose worker dies is restarted by Tune (``max_failures``), and
an interrupted sweep resumed; :func:`resume_point` picks the latest completed
evaluation, Tune's checkpoint or the run folder's own when it is later (Tune saves its
state only now and then), and ``pretrain(..., resume_from=...)`` restores the DSE
history up to it, so no evaluation is lost or trained twice. An evaluation Tune never
heard of is reported first, so the stopper judges it.

Devices: :func:`trial_devices` maps the GPUs a trial holds (``resources.gpu``, a
fraction included) to Lightning's accelerator and devices, and falls back to the CPU,
with a warning naming the GPU ids Ray gave, when torch sees no CUDA device.

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
from dataclasses import dataclass
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
from dse_tune.runs import CURVE_PLOT, SWEEP_RUNS_DIR, Evaluation, RunRecord, mark_stopped, read_run

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "RUNS_DIR",
    "TRIAL_FILE",
    "VERDICT_FILE",
    "ResumePoint",
    "TrialDevices",
    "mark_run_stopped",
    "pretrain_trainable",
    "read_trial_state",
    "record_verdict",
    "resume_point",
    "run_dir_of_trial",
    "trial_devices",
]

#: Run folders of a sweep's trials: ``SWEEP_DIR/runs/<trial_id>``.
RUNS_DIR = SWEEP_RUNS_DIR
#: Per-trial bookkeeping in the run folder (attempts, nodes, final status).
TRIAL_FILE = "trial.json"
#: A Tune checkpoint restored into the run folder for a resumed attempt.
RESUME_PREFIX = ".resume_"
#: The sweep's stopper's latest verdict on the trial (evaluation, stop, reason),
#: written on the driver: what the workers of a multi-worker trial wait for.
VERDICT_FILE = "stopper_verdict.json"


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
    gpu: float = 0.0,
    callbacks: Sequence[pl.Callback] = (),
    listeners: Sequence[Any] = (),
) -> None:
    """Tune function trainable: one DSE-monitored pretraining run per trial.

    Args:
        sampled: the trial's sampled settings (Tune's ``config``), merged over
            ``base_config`` into a :class:`~dse_tune.ssl.config.PretrainConfig`.
        base_config: the sweep's fixed PretrainConfig fields.
        data: overrides the config's ``data`` (``"synthetic"`` or a folder).
        gpu: the GPUs the trial holds (``resources.gpu``, 0.5 for a shared device):
            :func:`trial_devices` turns it into Lightning's accelerator and devices.
        callbacks: extra Lightning callbacks of every trial.
        listeners: extra run listeners of every trial, called before the Tune reporter.

    Use it through :func:`~dse_tune.integrations.ray.sweep.build_tuner`, or directly:

    >>> trainable = tune.with_parameters(pretrain_trainable, base_config={"epochs": 4})  # doctest: +SKIP
    """
    from dse_tune.ssl.pretrain import pretrain

    quiet_trial_logs()
    context = tune.get_context()
    run_dir = prepare_run_dir(run_dir_of_trial(context))
    trial_state = read_trial_state(run_dir) or {"trial_id": context.get_trial_id(), "attempts": []}
    devices = trial_devices(gpu)
    with tempfile.TemporaryDirectory(prefix=RESUME_PREFIX, dir=run_dir) as restore_dir:
        resume = resume_point(run_dir, tune.get_checkpoint(), Path(restore_dir))
        start_attempt(run_dir, trial_state, resume, devices)
        if resume.finished:
            return  # stopped before the interruption: nothing left to train
        reporter = TuneReporter(run_dir, send_history=resume.path is not None)
        if resume.unreported is not None:
            # Done before the interruption but never seen by Tune: report it now, so
            # the stopper judges it and Tune keeps its checkpoint, instead of retraining it.
            reporter(resume.unreported)
        result = pretrain(
            {**base_config, **sampled},
            run_dir,
            data=data,
            callbacks=list(callbacks),
            listeners=[*listeners, reporter],
            resume_from=resume.path,
            enable_progress_bar=False,
            accelerator=devices.accelerator,
            devices=devices.devices,
        )
    finish_attempt(run_dir, trial_state, result.stopped_early, int(result.epochs_completed), result.stop_reason)


def quiet_trial_logs() -> None:
    """Lightning's per-fit banners and Ray's per-checkpoint lines from every trial would
    bury Tune's progress table."""
    import logging

    for name in ("lightning.pytorch", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def prepare_run_dir(run_dir: Path) -> Path:
    """Create the run folder; remove what a killed attempt staged (one attempt at a time)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*run_dir.glob(f"{STAGING_PREFIX}*"), *run_dir.glob(f"{RESUME_PREFIX}*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return run_dir


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class TrialDevices:
    """What a trial passes to Lightning, and what Ray gave it."""

    accelerator: str
    devices: int | str
    #: ``ray.get_gpu_ids()`` in the trial's process (empty outside Ray or without GPUs).
    gpu_ids: tuple[str, ...] = ()
    cuda_visible_devices: str | None = None
    #: Why the trial trains elsewhere than its resources say (None when it does not).
    note: str | None = None


def trial_devices(gpu: float, *, cuda_available: bool | None = None, devices: int | str = 1) -> TrialDevices:
    """Lightning's accelerator and devices for a process holding ``gpu`` GPUs.

    Ray gives the process its GPUs through ``CUDA_VISIBLE_DEVICES`` (a fractional GPU
    too: two 0.5 trials see the same device), so the process trains on ``devices``
    visible CUDA devices (1 for a trial; ``"auto"`` for a Ray Train worker, whose
    device Ray picks). When it holds GPUs but torch sees no CUDA device (logical GPUs
    declared with ``ray.init(num_gpus=...)``, a CPU-only torch build), it trains on the
    CPU and warns once, naming the GPU ids it was given.

    Example:
        >>> trial_devices(0.0).accelerator
        'cpu'
        >>> shared = trial_devices(0.5, cuda_available=True)  # half a GPU: still one device
        >>> shared.accelerator, shared.devices
        ('gpu', 1)
    """
    import torch

    gpu_ids = _ray_gpu_ids() if gpu > 0 else ()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu <= 0:
        return TrialDevices("cpu", 1, gpu_ids, visible)
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if available:
        return TrialDevices("gpu", devices, gpu_ids, visible)
    note = (
        f"this trial holds {gpu:g} GPU (Ray GPU ids {list(gpu_ids)}, CUDA_VISIBLE_DEVICES={visible!r}) "
        "but torch.cuda.is_available() is False: training on the CPU"
    )
    warnings.warn(note, stacklevel=2)
    return TrialDevices("cpu", 1, gpu_ids, visible, note)


def _ray_gpu_ids() -> tuple[str, ...]:
    import ray

    if not ray.is_initialized():
        return ()
    return tuple(str(i) for i in ray.get_gpu_ids())


# --------------------------------------------------------------------------- resume


@dataclass(frozen=True)
class ResumePoint:
    """Where an attempt starts: a checkpoint (None: from scratch) and its evaluation."""

    path: Path | None = None
    evaluation: int | None = None
    #: The run folder's evaluation resumed from when Tune never got its report.
    unreported: Evaluation | None = None
    #: The run folder says the sweep's pruner already stopped this trial.
    finished: bool = False


def resume_point(run_dir: Path, checkpoint: Any, restore_dir: Path) -> ResumePoint:
    """The latest completed evaluation to resume from: Tune's checkpoint or the run
    folder's own, whichever is later.

    The run folder records an evaluation (checkpoint saved, history written) before Tune
    hears of it, and Tune saves its experiment state only now and then, so after an
    interruption Tune's checkpoint may be older than the run folder's last evaluation.
    Resuming from Tune's alone would train that evaluation again.
    """
    tune_index = None
    tune_path = None
    if checkpoint is not None:
        # A copy: Tune may delete the checkpoint once newer ones are kept.
        checkpoint.to_directory(str(restore_dir))
        tune_path = restore_dir / CHECKPOINT_FILE
        state = read_json(restore_dir / CHECKPOINT_STATE_FILE) or {}
        tune_index = (state.get("evaluation") or {}).get("index")
    run, latest = latest_completed_evaluation(run_dir)
    stopped = run is not None and run.stopped_early
    if latest is None or (tune_index is not None and latest.index <= tune_index):
        return ResumePoint(tune_path, tune_index, finished=stopped and tune_path is not None)
    path = run.checkpoint_path(latest)
    return ResumePoint(path, latest.index, unreported=latest, finished=stopped)


def latest_completed_evaluation(run_dir: Path) -> tuple[RunRecord | None, Evaluation | None]:
    """The run folder's record and its last evaluation whose checkpoint file exists."""
    try:
        run = read_run(run_dir)
    except (OSError, ValueError):
        return None, None
    for evaluation in reversed(run.evaluations):
        path = run.checkpoint_path(evaluation)
        if path is not None and path.is_file():
            return run, evaluation
    return run, None


# --------------------------------------------------------------------------- bookkeeping


def start_attempt(
    run_dir: Path, trial_state: dict[str, Any], resume: ResumePoint, devices: TrialDevices, **extra: Any
) -> None:
    """Record a new attempt in :data:`TRIAL_FILE` (where it resumed, what devices it got)."""
    trial_state["status"] = "stopped" if resume.finished else "running"
    attempt = _attempt(len(trial_state["attempts"]) + 1, resume.evaluation)
    attempt.update(
        accelerator=devices.accelerator,
        gpu_ids=list(devices.gpu_ids),
        cuda_visible_devices=devices.cuda_visible_devices,
        device_note=devices.note,
        **extra,
    )
    trial_state["attempts"].append(attempt)
    _write_trial_state(run_dir, trial_state)


def finish_attempt(
    run_dir: Path, trial_state: dict[str, Any], stopped: bool, epochs_completed: int, stop_reason: str | None
) -> None:
    """Record how the trial ended in :data:`TRIAL_FILE`.

    The file is read again first: an attempt presumed dead (its node removed) can still
    finish after Tune has started a retry elsewhere, and its stale copy must not erase
    the retry's record. Only the latest attempt sets the trial's outcome.
    """
    ours = trial_state["attempts"][-1]["attempt"]
    current = read_trial_state(run_dir) or trial_state
    attempts = current.get("attempts") or trial_state["attempts"]
    if attempts[-1].get("attempt") == ours:
        current.update(
            status="stopped" if stopped else "finished",
            epochs_completed=epochs_completed,
            stop_reason=stop_reason,
            finished=time.time(),
        )
    _write_trial_state(run_dir, current)


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


def record_verdict(trial_id: str, result: Mapping[str, Any], stop: bool, reason: str | None) -> None:
    """``on_decision`` hook of a sweep's stopper: write its verdict on the result's
    evaluation into the run folder (:data:`VERDICT_FILE`), where the workers of a
    multi-worker trial wait for it (:mod:`~dse_tune.integrations.ray.distributed`)."""
    run_dir, evaluation = result.get("run_dir"), result.get("evaluation")
    if not run_dir or evaluation is None:
        return
    try:
        write_json(
            Path(run_dir) / VERDICT_FILE,
            {"trial_id": trial_id, "evaluation": int(evaluation), "stop": bool(stop), "reason": reason},
        )
    except OSError as error:  # inside Tune's control loop: warn, never end the sweep
        warnings.warn(f"cannot record the stopper's verdict for trial {trial_id} in {run_dir}: {error}", stacklevel=2)


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
