"""The Tune trainable of a sweep: one DSE-monitored pretraining run per trial.

:func:`pretrain_trainable` runs :func:`dse_tune.ssl.pretrain.pretrain` in the trial's run
folder ``SWEEP_DIR/runs/<trial_id>`` (:func:`run_dir_of_trial`), with a
:class:`~dse_tune.integrations.ray.reporter.TuneReporter` listening. The run folder is the
trial's record and its only checkpoint store: Tune is sent metrics, no checkpoints.

A trial restarted by Tune (``max_failures``) or a resumed sweep continues from the run
folder's latest evaluation whose checkpoint exists (:func:`resume_point`), so no evaluation
is lost or trained twice; one Tune never took (the process died in between) is reported
first, so the stopper judges it. Attempts (node, pid, devices) go to
:data:`dse_tune.sweeps.TRIAL_FILE`. :func:`trial_devices` maps the GPUs a trial holds to
Lightning's accelerator and devices.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from dse_tune.integrations.ray.reporter import TuneReporter, node_id
from dse_tune.runs import Evaluation, read_run
from dse_tune.sweeps import RUNS_DIR, TRIAL_FILE, finish_attempt, read_trial_state, start_attempt, write_json

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["ResumePoint", "TrialDevices", "pretrain_trainable", "resume_point", "run_dir_of_trial", "trial_devices"]


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
            ``base_config`` (the sweep's fixed PretrainConfig fields).
        data: overrides the config's ``data`` (``"synthetic"`` or a folder).
        gpu: the GPUs the trial holds (``resources.gpu``, 0.5 for a shared device).
        listeners: extra run listeners of every trial, called before the Tune reporter.

    >>> trainable = tune.with_parameters(pretrain_trainable, base_config={"epochs": 4})  # doctest: +SKIP
    """
    from dse_tune.ssl.pretrain import pretrain

    devices = trial_devices(gpu)
    run_dir, resume, attempt = start_trial(accelerator=devices.accelerator, gpu_ids=list(devices.gpu_ids),
                                           cuda_visible_devices=devices.cuda_visible_devices, device_note=devices.note)
    if resume.finished:
        return  # stopped before the interruption: nothing left to train
    reporter = TuneReporter(run_dir, send_history=resume.path is not None)
    report_unheard(run_dir, reporter, resume)
    pretrain({**base_config, **sampled}, run_dir, data=data, callbacks=list(callbacks),
             listeners=[*listeners, reporter, ReportedMarker(run_dir)], resume_from=resume.path,
             enable_progress_bar=False, accelerator=devices.accelerator, devices=devices.devices)
    finish_attempt(run_dir, attempt)


def start_trial(**attempt_details: Any) -> tuple[Path, ResumePoint, int]:
    """The trial's run folder (created), where it resumes, and this attempt's number
    (recorded with ``attempt_details``)."""
    quiet_trial_logs()
    run_dir = run_dir_of_trial()
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_point(run_dir)
    attempt = start_attempt(run_dir, tune.get_context().get_trial_id(), node_id=node_id(),
                            resumed_from_evaluation=resume.index, **attempt_details)
    return run_dir, resume, attempt


def quiet_trial_logs() -> None:
    """Lightning's per-fit banners and Ray's per-report lines from every trial would
    bury Tune's progress table."""
    import logging

    for name in ("lightning.pytorch", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- resume


@dataclass(frozen=True)
class ResumePoint:
    """Where an attempt starts: a checkpoint (None: from scratch) and its evaluation."""

    path: Path | None = None
    evaluation: Evaluation | None = None
    #: The run folder says the run already ended early (the sweep's pruner or its rule).
    finished: bool = False

    @property
    def index(self) -> int | None:
        return None if self.evaluation is None else self.evaluation.index


def resume_point(run_dir: Path) -> ResumePoint:
    """The run folder's latest evaluation whose checkpoint file exists (the run folder
    records an evaluation, checkpoint first, before anyone hears of it)."""
    try:
        run = read_run(run_dir)
    except (OSError, ValueError):
        return ResumePoint()
    for evaluation in reversed(run.evaluations):
        path = run.checkpoint_path(evaluation)
        if path is not None and path.is_file():
            return ResumePoint(path, evaluation, run.stopped_early)
    return ResumePoint(finished=run.stopped_early)


#: The key of :data:`~dse_tune.sweeps.TRIAL_FILE` that holds the last evaluation Tune took.
REPORTED_KEY = "reported_evaluation"


class ReportedMarker:
    """A run listener after the Tune reporter: note the evaluation Tune has taken.

    ``tune.report`` returns once the driver has taken the result, so an evaluation
    noted here needs no second report after a crash; one not noted is reported again
    (:func:`report_unheard`).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def __call__(self, evaluation: Evaluation, decision: Any = None) -> None:
        state = read_trial_state(self.run_dir) or {"attempts": []}
        write_json(self.run_dir / TRIAL_FILE, {**state, REPORTED_KEY: evaluation.index})


def report_unheard(run_dir: Path, reporter: TuneReporter, resume: ResumePoint) -> None:
    """Report the evaluation an attempt resumes from when Tune never took it: done before
    the interruption, never judged; judged now instead of trained again."""
    if resume.evaluation is None:
        return
    if (read_trial_state(run_dir) or {}).get(REPORTED_KEY, -1) < resume.evaluation.index:
        reporter(resume.evaluation)
        ReportedMarker(run_dir)(resume.evaluation)


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

    Ray gives the process its GPUs through ``CUDA_VISIBLE_DEVICES`` (two 0.5 trials see
    the same device), so it trains on ``devices`` visible CUDA devices (``"auto"`` for a
    Ray Train worker). When torch sees no CUDA device (logical GPUs of
    ``ray.init(num_gpus=...)``, a CPU-only torch) it trains on the CPU and warns.

    Example:
        >>> trial_devices(0.0).accelerator
        'cpu'
        >>> shared = trial_devices(0.5, cuda_available=True)  # half a GPU: still one device
        >>> shared.accelerator, shared.devices
        ('gpu', 1)
    """
    import ray
    import torch

    gpu_ids = tuple(str(i) for i in ray.get_gpu_ids()) if gpu > 0 and ray.is_initialized() else ()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu <= 0:
        return TrialDevices("cpu", 1, gpu_ids, visible)
    if torch.cuda.is_available() if cuda_available is None else cuda_available:
        return TrialDevices("gpu", devices, gpu_ids, visible)
    note = (
        f"this trial holds {gpu:g} GPU (Ray GPU ids {list(gpu_ids)}, CUDA_VISIBLE_DEVICES={visible!r}) "
        "but torch.cuda.is_available() is False: training on the CPU"
    )
    warnings.warn(note, stacklevel=2)
    return TrialDevices("cpu", 1, gpu_ids, visible, note)
