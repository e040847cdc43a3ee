"""Trials over several workers: a Ray Train ``TorchTrainer`` run inside the Tune trial.

With ``resources: {workers: N, gpus_per_worker: G, cpus_per_worker: C}`` a trial is N DDP
processes. Ray Train V2 runs a distributed job *from* a Tune function trainable, so the
Tune trial is a small driver (:func:`distributed_pretrain_trainable`) holding no resources;
its ``TorchTrainer`` workers each run :func:`dse_tune.ssl.pretrain.pretrain` under
Lightning's Ray strategy, and Ray's ``TuneReportCallback`` forwards rank 0's reports to
Tune. The run folder, one report per DSE evaluation (:class:`TrainReportCallback`) and
resuming from the run folder are as in a one-process trial.

Tune's stopper cannot pause a Ray Train run while it judges a report, so the sweep's
pruner also runs on rank 0 as a run listener (:class:`PrunerListener`: the same pruner on
the same history); its stop is part of the decision the DSE monitor broadcasts, so all
ranks stop at the same evaluation. A pruner that compares trials sees only this one
there; the driver's stopper, which sees them all, still ends the Tune trial.

Example:
    >>> ray_strategy_name("ddp"), ray_strategy_name("ddp_find_unused_parameters_true")
    ('RayDDPStrategy', 'RayDDPStrategy(find_unused_parameters=True)')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from ray import tune

from dse_tune.integrations.ray.reporter import TuneReporter
from dse_tune.integrations.ray.stopper import OptunaPrunerStopper
from dse_tune.integrations.ray.trainable import quiet_trial_logs, report_unheard, start_trial, trial_devices
from dse_tune.runs import read_run
from dse_tune.sweeps import finish_attempt

if TYPE_CHECKING:
    from dse_tune.degradation import DegradationDecision
    from dse_tune.runs import Evaluation
    from dse_tune.search_space import PrunerSpec, Resources

__all__ = ["TRAIN_DIR", "PrunerListener", "TrainReportCallback", "distributed_pretrain_trainable", "ray_strategy",
           "ray_strategy_name"]

#: Ray Train's storage of a sweep's multi-worker trials: ``SWEEP_DIR/train/<trial_id>_<attempt>``.
TRAIN_DIR = "train"

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


def distributed_pretrain_trainable(
    sampled: Mapping[str, Any],
    *,
    base_config: Mapping[str, Any],
    resources: Resources,
    data: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
    listeners: Sequence[Any] = (),
    pruner: PrunerSpec | None = None,
) -> None:
    """Tune function trainable of a multi-worker trial: one ``TorchTrainer`` run.

    Args:
        sampled, base_config, data, callbacks: as for
            :func:`~dse_tune.integrations.ray.trainable.pretrain_trainable`.
        resources: the trial's workers and the CPUs and GPUs of each.
        listeners: extra run listeners of every trial (rank 0 calls them).
        pruner: the sweep's pruner, applied on rank 0 (:class:`PrunerListener`).
    """
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    context = tune.get_context()
    run_dir, resume, attempt = start_trial(workers=resources.workers, gpus_per_worker=resources.gpu)
    if resume.finished:
        return
    report_unheard(run_dir, TuneReporter(run_dir, send_history=True), resume)
    judge = [] if pruner is None else [PrunerListener(pruner, context.get_trial_id(), run_dir)]
    loop_config = {"config": {**base_config, **sampled}, "run_dir": str(run_dir), "data": data,
                   "gpu": resources.gpu, "resume_from": None if resume.path is None else str(resume.path),
                   "callbacks": list(callbacks), "listeners": [*listeners, *judge],
                   "send_history": resume.path is not None}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpu > 0,
                                               resources_per_worker={"CPU": resources.cpu, "GPU": resources.gpu}),
        run_config=ray.train.RunConfig(
            name=f"{context.get_trial_id()}_attempt{attempt}",
            storage_path=str(Path(context.get_storage().experiment_fs_path) / TRAIN_DIR),
            callbacks=[TuneReportCallback()],
            # Retries are Tune's (max_failures), from the run folder: one policy.
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()
    finish_attempt(run_dir, attempt)


def _train_worker(loop_config: Mapping[str, Any]) -> None:
    """``train_loop_per_worker``: this worker's share of the trial's DDP pretraining."""
    from ray.train.lightning import RayLightningEnvironment

    from dse_tune.ssl.pretrain import pretrain

    quiet_trial_logs()
    config = dict(loop_config["config"])
    devices = trial_devices(loop_config["gpu"], devices="auto")
    run_dir = Path(loop_config["run_dir"])
    reporter = TrainReportCallback(run_dir, send_history=loop_config["send_history"])
    pretrain(
        config, run_dir, data=loop_config["data"], callbacks=[*loop_config["callbacks"], reporter],
        listeners=loop_config["listeners"], resume_from=loop_config["resume_from"], enable_progress_bar=False,
        accelerator=devices.accelerator, devices=devices.devices,
        trainer_kwargs={"strategy": ray_strategy(str(config.get("strategy", "auto"))),
                        "plugins": [RayLightningEnvironment()]},
    )


class PrunerListener:
    """A run listener on rank 0: the sweep's pruner on this trial's history; a stop
    decision (with the reason the sweep's stopper gives) when it stops the trial."""

    def __init__(self, pruner: PrunerSpec, trial_id: str, run_dir: str | Path) -> None:
        self.pruner, self.trial_id, self.run_dir = pruner, trial_id, Path(run_dir)
        self._stopper: OptunaPrunerStopper | None = None

    def __call__(self, evaluation: Evaluation, decision: DegradationDecision) -> DegradationDecision | None:
        from dse_tune.integrations.optuna.space import build_pruner

        if self._stopper is None:
            self._stopper = OptunaPrunerStopper(build_pruner(self.pruner), on_stop=None)
        result = {"evaluation": evaluation.index, "dse": evaluation.dse, "dse_history": read_run(self.run_dir).dse}
        if not self._stopper(self.trial_id, result):
            return None
        reason = f"stopped by the sweep's pruner: {self._stopper.stopped[self.trial_id].reason}"
        return dataclasses.replace(decision, stop=True, reason=reason)


class TrainReportCallback(pl.Callback):
    """Every rank reports each DSE evaluation to Ray Train, no checkpoint: rank 0 sends
    :meth:`TuneReporter.metrics`, the others ``{"evaluation": k}``. Runs after the DSE
    monitor (``pretrain`` puts it first), so the history is written by then."""

    def __init__(self, run_dir: str | Path, *, send_history: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.reporter = TuneReporter(self.run_dir, send_history=send_history, is_global_zero=lambda: True)
        self._reported: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from ray.train.lightning import prepare_trainer

        prepare_trainer(trainer)  # refuses a strategy or environment Ray cannot drive

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._reported is None:  # what a resume restored was reported before
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
            ray.train.report(self.reporter.metrics(evaluation, read_run(self.run_dir)))
        else:
            ray.train.report({"evaluation": evaluation.index})


def _monitor(trainer: pl.Trainer) -> Any:
    from dse_tune.integrations.lightning import DSEMonitor

    for callback in trainer.callbacks:
        if isinstance(callback, DSEMonitor):
            return callback
    raise RuntimeError("TrainReportCallback needs the run's DSEMonitor among the Trainer's callbacks")
