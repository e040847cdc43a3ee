"""Trials over several workers: a Ray Train ``TorchTrainer`` run inside the Tune trial.

With ``resources: {workers: N, gpus_per_worker: G, cpus_per_worker: C}`` a trial is N
DDP processes. Ray Train V2 (the default since Ray 2.51) runs a distributed job *from* a
Tune function trainable, so the Tune trial is a small driver,
:func:`distributed_pretrain_trainable`, holding no resources of its own; it starts a
``TorchTrainer`` whose N workers each run :func:`dse_tune.ssl.pretrain.pretrain` under
Lightning's Ray strategy (``RayDDPStrategy`` + ``RayLightningEnvironment``, checked by
``prepare_trainer``), and Ray's ``TuneReportCallback`` forwards rank 0's reports to Tune.

What stays the same as a one-process trial (:mod:`~dse_tune.integrations.ray.trainable`):

- the run folder ``SWEEP_DIR/runs/<trial_id>``, written by rank 0 alone;
- one report per DSE evaluation: :class:`TrainReportCallback` makes every rank call
  ``ray.train.report`` at the same evaluation (Ray Train requires all workers to report
  the same number of times); rank 0 attaches the evaluation's checkpoint and the metrics
  of :class:`~dse_tune.integrations.ray.reporter.TuneReporter`;
- pruning: the sweep's stopper judges rank 0's report on the driver, and writes its
  verdict into the run folder (:func:`~dse_tune.integrations.ray.trainable.record_verdict`);
  every rank waits for that verdict before training on, so a stopped trial ends at the
  evaluation that stopped it, on every rank at the same step;
- resume: from the run folder's latest completed evaluation
  (:func:`~dse_tune.integrations.ray.trainable.resume_point`); Ray Train keeps its own
  copies of the checkpoints under ``SWEEP_DIR/train/``.

Example:
    >>> ray_strategy_name("ddp"), ray_strategy_name("ddp_find_unused_parameters_true")
    ('RayDDPStrategy', 'RayDDPStrategy(find_unused_parameters=True)')
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from ray import tune

from dse_tune.integrations.ray.reporter import TuneReporter
from dse_tune.integrations.ray.trainable import (
    RESUME_PREFIX,
    VERDICT_FILE,
    finish_attempt,
    prepare_run_dir,
    quiet_trial_logs,
    read_json,
    read_trial_state,
    resume_point,
    run_dir_of_trial,
    start_attempt,
    trial_devices,
)
from dse_tune.runs import read_config, read_run

if TYPE_CHECKING:
    from dse_tune.search_space import Resources

__all__ = [
    "TRAIN_DIR",
    "TrainReportCallback",
    "distributed_pretrain_trainable",
    "ray_strategy",
    "ray_strategy_name",
    "wait_for_verdict",
]

#: Ray Train's storage of a sweep's multi-worker trials: ``SWEEP_DIR/train/<trial_id>_<attempt>``.
TRAIN_DIR = "train"
#: How long the workers wait for the stopper's verdict on an evaluation.
VERDICT_TIMEOUT_S = 600.0

#: Lightning strategy names -> (Ray's strategy class, its keyword arguments).
_RAY_STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "auto": ("RayDDPStrategy", {}),
    "ddp": ("RayDDPStrategy", {}),
    "ddp_find_unused_parameters_true": ("RayDDPStrategy", {"find_unused_parameters": True}),
    "fsdp": ("RayFSDPStrategy", {}),
    "deepspeed": ("RayDeepSpeedStrategy", {}),
}


def ray_strategy_name(strategy: str) -> str:
    """How :func:`ray_strategy` translates a PretrainConfig ``strategy`` (for messages)."""
    if strategy not in _RAY_STRATEGIES:
        raise ValueError(
            f"strategy {strategy!r} cannot run over Ray Train workers; a multi-worker trial "
            f"takes one of {sorted(_RAY_STRATEGIES)}"
        )
    name, kwargs = _RAY_STRATEGIES[strategy]
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{name}({arguments})" if arguments else name


def ray_strategy(strategy: str) -> Any:
    """Lightning's Ray strategy object for a PretrainConfig ``strategy`` name."""
    import ray.train.lightning as ray_lightning

    ray_strategy_name(strategy)  # the check and its message
    name, kwargs = _RAY_STRATEGIES[strategy]
    return getattr(ray_lightning, name)(**kwargs)


# --------------------------------------------------------------------------- the driver


def distributed_pretrain_trainable(
    sampled: Mapping[str, Any],
    *,
    base_config: Mapping[str, Any],
    resources: Resources,
    data: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
    listeners: Sequence[Any] = (),
    wait_for_verdicts: bool = True,
    checkpoints_to_keep: int = 2,
) -> None:
    """Tune function trainable of a multi-worker trial: one ``TorchTrainer`` run.

    Args:
        sampled, base_config, data, callbacks: as for
            :func:`~dse_tune.integrations.ray.trainable.pretrain_trainable`.
        resources: the trial's workers and the CPUs and GPUs of each.
        listeners: extra run listeners of every trial (rank 0 calls them).
        wait_for_verdicts: the sweep has a stopper: the workers wait for its verdict on
            each evaluation (:data:`~dse_tune.integrations.ray.trainable.VERDICT_FILE`).
        checkpoints_to_keep: Ray Train's copies of the trial's checkpoints.
    """
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    quiet_trial_logs()
    context = tune.get_context()
    run_dir = prepare_run_dir(run_dir_of_trial(context))
    trial_state = read_trial_state(run_dir) or {"trial_id": context.get_trial_id(), "attempts": []}
    with _restore_dir(run_dir) as restore_dir:
        resume = resume_point(run_dir, tune.get_checkpoint(), restore_dir)
        start_attempt(
            run_dir, trial_state, resume, trial_devices(0.0), workers=resources.workers, gpus_per_worker=resources.gpu
        )
        if resume.finished:
            return
        if resume.unreported is not None:  # Tune never heard of it: judge it first
            TuneReporter(run_dir, send_history=True)(resume.unreported)
        loop_config = {
            "config": {**base_config, **sampled},
            "run_dir": str(run_dir),
            "data": data,
            "gpu": resources.gpu,
            "resume_from": None if resume.path is None else str(resume.path),
            "callbacks": list(callbacks),
            "listeners": list(listeners),
            "wait_for_verdicts": wait_for_verdicts,
            "send_history": resume.path is not None,
        }
        attempt = len(trial_state["attempts"])
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(
                num_workers=resources.workers,
                use_gpu=resources.gpu > 0,
                resources_per_worker={"CPU": resources.cpu, "GPU": resources.gpu},
            ),
            run_config=ray.train.RunConfig(
                name=f"{context.get_trial_id()}_attempt{attempt}",
                storage_path=str(Path(context.get_storage().experiment_fs_path) / TRAIN_DIR),
                callbacks=[TuneReportCallback()],
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=checkpoints_to_keep),
                # Retries are Tune's (max_failures), from the run folder: one policy.
                failure_config=ray.train.FailureConfig(max_failures=0),
            ),
        )
        trainer.fit()
    run = read_run(run_dir)
    epochs = read_config(run_dir).get("epochs")
    last_epoch = run.evaluations[-1].epoch if run.evaluations else None
    completed = last_epoch + 1 if run.stopped_early and last_epoch is not None else epochs
    finish_attempt(run_dir, trial_state, run.stopped_early, int(completed or 0), run.stop_reason)


def _restore_dir(run_dir: Path) -> Any:
    import tempfile

    class _Folder(tempfile.TemporaryDirectory):
        def __enter__(self) -> Path:
            return Path(super().__enter__())

    return _Folder(prefix=RESUME_PREFIX, dir=run_dir)


def _train_worker(loop_config: Mapping[str, Any]) -> None:
    """``train_loop_per_worker``: this worker's share of the trial's DDP pretraining."""
    from ray.train.lightning import RayLightningEnvironment

    from dse_tune.ssl.pretrain import pretrain

    quiet_trial_logs()
    config = dict(loop_config["config"])
    devices = trial_devices(loop_config["gpu"], devices="auto")
    run_dir = Path(loop_config["run_dir"])
    reporter = TrainReportCallback(
        run_dir, wait_for_verdicts=loop_config["wait_for_verdicts"], send_history=loop_config["send_history"]
    )
    pretrain(
        config,
        run_dir,
        data=loop_config["data"],
        callbacks=[*loop_config["callbacks"], reporter],
        listeners=loop_config["listeners"],
        resume_from=loop_config["resume_from"],
        enable_progress_bar=False,
        accelerator=devices.accelerator,
        devices=devices.devices,
        trainer_kwargs={
            "strategy": ray_strategy(str(config.get("strategy", "auto"))),
            "plugins": [RayLightningEnvironment()],
        },
    )


# --------------------------------------------------------------------------- the workers


class TrainReportCallback(pl.Callback):
    """Every rank reports each DSE evaluation to Ray Train, then waits for the verdict.

    Runs after the DSE monitor (``pretrain`` puts the monitor first), so the evaluation
    is recorded on every rank, its checkpoint saved and the history written by rank 0.
    Rank 0 sends :meth:`TuneReporter.metrics` and a checkpoint (the evaluation's
    checkpoint and the history: the same folder a one-process trial gives Tune); the
    other ranks report ``{"evaluation": k}`` without a checkpoint. With
    ``wait_for_verdicts`` every rank then reads the stopper's verdict on ``k`` from the
    run folder (:func:`wait_for_verdict`) and stops when it says so.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        wait_for_verdicts: bool = True,
        send_history: bool = False,
        verdict_timeout_s: float = VERDICT_TIMEOUT_S,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.wait_for_verdicts = wait_for_verdicts
        self.verdict_timeout_s = verdict_timeout_s
        self.reporter = TuneReporter(self.run_dir, send_history=send_history, is_global_zero=lambda: True)
        self._reported: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from ray.train.lightning import prepare_trainer

        prepare_trainer(trainer)  # refuses a strategy or environment Ray cannot drive

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._reported is None:  # after a resume restored the history
            evaluations = _monitor(trainer).tracker.evaluations
            self._reported = evaluations[-1].index if evaluations else -1

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._report_new_evaluation(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report_new_evaluation(trainer)

    def _report_new_evaluation(self, trainer: pl.Trainer) -> None:
        import ray.train

        evaluations = _monitor(trainer).tracker.evaluations
        if not evaluations or self._reported is None or evaluations[-1].index <= self._reported:
            return
        evaluation = evaluations[-1]
        self._reported = evaluation.index
        if trainer.is_global_zero:
            run = read_run(self.run_dir)
            with self.reporter.staged_checkpoint(evaluation, run) as staging:
                ray.train.report(
                    self.reporter.metrics(evaluation, run),
                    checkpoint=ray.train.Checkpoint.from_directory(str(staging)),
                    checkpoint_dir_name=f"evaluation_{evaluation.index:04d}",
                )
        else:
            ray.train.report({"evaluation": evaluation.index}, checkpoint=None)
        if not self.wait_for_verdicts:
            return
        verdict = wait_for_verdict(self.run_dir, evaluation.index, self.verdict_timeout_s)
        if verdict is None:
            warnings.warn(
                f"{self.run_dir}: no verdict from the sweep's stopper on evaluation {evaluation.index} "
                f"within {self.verdict_timeout_s:g} s; training on without waiting again",
                stacklevel=2,
            )
            self.wait_for_verdicts = False
        elif verdict.get("stop"):
            trainer.should_stop = True


def wait_for_verdict(run_dir: Path, evaluation: int, timeout_s: float, poll_s: float = 0.05) -> dict[str, Any] | None:
    """The stopper's verdict on ``evaluation`` (or a later one) in ``run_dir``, None on timeout.

    Example:
        >>> import tempfile
        >>> from dse_tune.integrations.ray.trainable import write_json
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> write_json(run_dir / VERDICT_FILE, {"evaluation": 3, "stop": True, "reason": "degraded"})
        >>> wait_for_verdict(run_dir, 3, timeout_s=1)["stop"], wait_for_verdict(run_dir, 4, timeout_s=0.1)
        (True, None)
    """
    deadline = time.monotonic() + timeout_s
    while True:
        verdict = read_json(Path(run_dir) / VERDICT_FILE) or {}
        if verdict.get("evaluation", -1) >= evaluation:
            return verdict
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)


def _monitor(trainer: pl.Trainer) -> Any:
    from dse_tune.integrations.lightning import DSEMonitor

    for callback in trainer.callbacks:
        if isinstance(callback, DSEMonitor):
            return callback
    raise RuntimeError("TrainReportCallback needs the run's DSEMonitor among the Trainer's callbacks")
