"""Ray Tune adapter: label-free sweeps of DSE-monitored pretraining runs.

Pieces, from the inside out:

- :func:`pretrain_trainable`: a Tune function trainable; one
  :func:`dse_tune.ssl.pretrain.pretrain` run per trial, in the run folder
  ``SWEEP_DIR/runs/<trial_id>`` (``dse_history.json``, every evaluation's checkpoint),
  so that :func:`dse_tune.selection.load_sweep` reads the sweep folder directly.
- :class:`TuneReportCallback`: the Lightning callback inside a trial that reports each
  DSE evaluation (``dse``, its components, ``dse_best``, ``epoch``, ``evaluation``) to
  Tune with a :class:`ray.tune.Checkpoint` holding that evaluation's Lightning
  checkpoint (weights, optimizer, loops and the DSE history so far).
- :class:`OptunaPrunerStopper`: a :class:`ray.tune.Stopper` around any Optuna pruner
  (:class:`~dse_tune.integrations.optuna.DSEDegradationPruner` by default), so the
  degradation rule stops a Tune trial at the same evaluation as everywhere else. Ray's
  ``OptunaSearch`` cannot prune (it pins Optuna's NopPruner), hence a stopper.
- :func:`build_tuner` / :func:`restore_tuner` / :func:`run_sweep`: a whole sweep from a
  :class:`~dse_tune.config.SweepSpec` (OptunaSearch on ``dse_best``, checkpoints kept by
  DSE, retries from the last checkpoint), and :func:`summarize_sweep`: per-trial
  status and the trial-epochs run versus a sweep without pruning.

Fault tolerance: a trial whose worker dies is restarted by Tune (``max_failures``) from
its latest checkpoint; :func:`pretrain_trainable` resumes ``pretrain(...,
resume_from=...)`` from it, which restores the DSE history up to that evaluation, so no
evaluation is lost or duplicated. An interrupted sweep continues with
:func:`restore_tuner` (``dse-tune sweep --resume SWEEP_DIR``); finished trials are kept.

The run folders must be reachable from the driver: ``storage_path`` is a local folder,
or on a multi-node cluster a shared (NFS) one, as Ray requires for checkpoints anyway.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import optuna
from optuna.trial import TrialState
from ray import tune

from dse_tune.atomic import atomic_write_text
from dse_tune.integrations.lightning import DSEMonitor

if TYPE_CHECKING:
    from dse_tune.config import SweepSpec

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_STATE_FILE",
    "METRIC",
    "RUNS_DIR",
    "TRIAL_FILE",
    "OptunaPrunerStopper",
    "StopRecord",
    "SweepSummary",
    "TrialSummary",
    "TuneReportCallback",
    "absolute_data",
    "build_tuner",
    "connect",
    "load_saved_spec",
    "mark_run_stopped",
    "pretrain_trainable",
    "restore_tuner",
    "run_dir_of_trial",
    "run_sweep",
    "summarize_sweep",
]

#: What the search algorithm optimizes: a trial's best DSE so far. Tune tells the
#: searcher the *last* reported value, and a stopped trial's last DSE is by
#: construction below its peak, so the searcher is given the running maximum.
METRIC = "dse_best"
#: Run folders of a sweep's trials: ``SWEEP_DIR/runs/<trial_id>``.
RUNS_DIR = "runs"
#: Per-trial bookkeeping in the run folder (attempts, nodes, final status).
TRIAL_FILE = "trial.json"
#: The Lightning checkpoint inside a Tune checkpoint.
CHECKPOINT_FILE = "model.ckpt"
#: The evaluation record and DSE history inside a Tune checkpoint (not named
#: ``dse_history.json``, so the selector never mistakes a checkpoint for a run).
CHECKPOINT_STATE_FILE = "dse_state.json"
#: Sweep bookkeeping in the sweep folder.
SPACE_COPY = "search_space.yaml"
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "sweep_summary.json"
# Temporary folders in a run folder: a Tune checkpoint being staged, a restored one.
STAGING_PREFIX = ".tune_checkpoint_"
RESUME_PREFIX = ".resume_"

_COMPONENT_METRICS = {
    "inter": "dse_inter",
    "intra_image": "dse_intra_image",
    "intra_batch": "dse_intra_batch",
    "dim": "dse_dim",
}


# --------------------------------------------------------------------------- reporting


class TuneReportCallback(pl.Callback):
    """Report every DSE evaluation of the run's :class:`DSEMonitor` to Ray Tune.

    After each evaluation (the monitor runs first in the same hook) it calls
    ``ray.tune.report`` with ``dse``, ``dse_inter``, ``dse_intra_image``,
    ``dse_intra_batch``, ``dse_dim``, ``dse_best`` (running maximum of the finite DSE
    values), ``epoch``, ``evaluation`` (index), ``global_step``, ``node_id`` and
    ``run_dir``, and a :class:`ray.tune.Checkpoint` holding the evaluation's Lightning
    checkpoint (:data:`CHECKPOINT_FILE`) and its record plus the history so far.

    Args:
        send_history: add ``dse_history`` (every DSE value so far, in evaluation order)
            to the first report. A resumed trial sets it, so a stopper rebuilt on the
            driver (a restored sweep) sees the values it missed.

    Tune blocks the trial in ``report`` until its stopper has decided, so a stopped
    trial's run folder ends exactly at the evaluation that stopped it.
    """

    def __init__(self, *, send_history: bool = False) -> None:
        super().__init__()
        self.send_history = send_history
        self._last_reported: tuple[int, int] | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._report_new_evaluation(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report_new_evaluation(trainer)

    def _report_new_evaluation(self, trainer: pl.Trainer) -> None:
        monitor = _find_monitor(trainer)
        if not monitor.evaluations:
            return
        record = monitor.evaluations[-1]
        key = (int(record["index"]), int(record["global_step"]))
        # Only an evaluation made in this very step is new (a restored history is not).
        if key == self._last_reported or record["global_step"] != trainer.global_step:
            return
        self._last_reported = key
        if not trainer.is_global_zero:
            return
        finite = [v for v in monitor.values if math.isfinite(v)]
        metrics: dict[str, Any] = {
            "dse": float(record["dse"]),
            **{metric: float(record[component]) for component, metric in _COMPONENT_METRICS.items()},
            METRIC: max(finite) if finite else math.nan,
            "epoch": int(record["epoch"]),
            "evaluation": int(record["index"]),
            "global_step": int(record["global_step"]),
            "node_id": _node_id(),
        }
        if monitor.run_dir is not None:
            metrics["run_dir"] = str(monitor.run_dir)
        if self.send_history:
            metrics["dse_history"] = list(monitor.values)
            self.send_history = False
        # Staged next to the run's checkpoints, so that a hard link can stand in for a copy.
        with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=monitor.run_dir) as staging:
            staging = Path(staging)
            source = None
            if record.get("checkpoint") and monitor.run_dir is not None:
                source = monitor.run_dir / record["checkpoint"]
            if source is not None and source.is_file():
                _link_or_copy(source, staging / CHECKPOINT_FILE)
            else:
                trainer.save_checkpoint(staging / CHECKPOINT_FILE, weights_only=False)
            state = {"evaluation": record, "history": monitor.history}
            (staging / CHECKPOINT_STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))


def _find_monitor(trainer: pl.Trainer) -> DSEMonitor:
    for callback in trainer.callbacks:
        if isinstance(callback, DSEMonitor):
            return callback
    raise RuntimeError("TuneReportCallback needs a DSEMonitor among the trainer's callbacks")


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link costs nothing; Tune copies the folder into its storage anyway.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside a Ray worker (direct use in a plain Lightning loop)
        return socket.gethostname()


# --------------------------------------------------------------------------- trainable


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

    Use it through :func:`build_tuner`, or directly::

        trainable = tune.with_parameters(pretrain_trainable, base_config={"epochs": 4})
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
    trial_state = _read_json(run_dir / TRIAL_FILE) or {"trial_id": context.get_trial_id(), "attempts": []}

    with tempfile.TemporaryDirectory(prefix=RESUME_PREFIX, dir=run_dir) as restore_dir:
        resume_from = None
        resumed_evaluation = None
        if checkpoint is not None:
            # A copy: Tune may delete the checkpoint once newer ones are kept.
            checkpoint.to_directory(restore_dir)
            resume_from = Path(restore_dir) / CHECKPOINT_FILE
            state = _read_json(Path(restore_dir) / CHECKPOINT_STATE_FILE) or {}
            resumed_evaluation = (state.get("evaluation") or {}).get("index")
        trial_state["status"] = "running"
        trial_state["attempts"].append(
            {
                "attempt": len(trial_state["attempts"]) + 1,
                "node_id": _node_id(),
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.time(),
                "resumed_from_evaluation": resumed_evaluation,
            }
        )
        _write_json(run_dir / TRIAL_FILE, trial_state)

        result = pretrain(
            {**base_config, **sampled},
            run_dir,
            data=data,
            callbacks=[TuneReportCallback(send_history=resume_from is not None), *callbacks],
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
    _write_json(run_dir / TRIAL_FILE, trial_state)


# --------------------------------------------------------------------------- stopper


@dataclass(frozen=True)
class StopRecord:
    """Why and where :class:`OptunaPrunerStopper` stopped a trial."""

    trial_id: str
    step: int
    reason: str


class OptunaPrunerStopper(tune.Stopper):
    """A Ray Tune stopper that asks an Optuna pruner whether to stop each trial.

    It keeps an in-memory Optuna study with one trial per Tune trial; every result's
    ``metric`` is recorded as that trial's intermediate value at step
    ``result[step_key]``, then ``pruner.prune(study, trial)`` decides. A final result
    (``done``) completes the Optuna trial, so pruners that compare with finished
    trials (``MedianPruner``, ``PercentilePruner``) see them.

    Args:
        pruner: any Optuna pruner; default
            :class:`~dse_tune.integrations.optuna.DSEDegradationPruner` (the shared
            degradation rule, so the stop lands on the same evaluation as in Lightning
            or Optuna).
        metric: the result key read as the trial's value (default ``"dse"``).
        mode: ``"max"`` (DSE) or ``"min"``; the study direction, which
            ``DSEDegradationPruner`` honours by negating values for ``"min"``.
        step_key: the result key used as the Optuna step (default ``"evaluation"``, a
            0-based count of evaluations).
        history_key: a result may carry the metric's values so far under this key
            (a list indexed by step); they fill steps this stopper missed (a sweep
            restored from its saved state). None to ignore.
        on_stop: called as ``on_stop(trial_id, result, reason)`` when a trial is
            stopped (must be picklable: Tune saves the stopper with the sweep).

    Results without ``metric`` or ``step_key`` are ignored. A stopped trial stays
    stopped. ``stopped`` maps trial ids to :class:`StopRecord`.

    Example:
        >>> stopper = OptunaPrunerStopper()  # DSEDegradationPruner(): warm-up 5, patience 3
        >>> dse = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65]
        >>> [stopper("t1", {"evaluation": i, "dse": v}) for i, v in enumerate(dse)][-2:]
        [False, True]
        >>> stopper.stopped["t1"].step
        9
    """

    def __init__(
        self,
        pruner: optuna.pruners.BasePruner | None = None,
        *,
        metric: str = "dse",
        mode: str = "max",
        step_key: str = "evaluation",
        history_key: str | None = "dse_history",
        on_stop: Callable[[str, Mapping[str, Any], str], None] | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if pruner is None:
            from dse_tune.integrations.optuna import DSEDegradationPruner

            pruner = DSEDegradationPruner()
        if not isinstance(pruner, optuna.pruners.BasePruner):
            raise TypeError(f"pruner must be an optuna pruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.metric = metric
        self.mode = mode
        self.step_key = step_key
        self.history_key = history_key
        self.on_stop = on_stop
        # Plain records survive pickling (Tune saves stoppers with the experiment);
        # the Optuna study is rebuilt from them on demand.
        self._values: dict[str, dict[int, float]] = {}
        self._states: dict[str, str] = {}
        self.stopped: dict[str, StopRecord] = {}
        self._study: optuna.Study | None = None
        self._storage: optuna.storages.InMemoryStorage | None = None
        self._optuna_ids: dict[str, int] = {}

    # ------------------------------------------------------------ Tune API

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if trial_id in self.stopped:
            return True
        if self._states.get(trial_id, "running") != "running":
            return False  # completed: a late result changes nothing
        values = self._values.setdefault(trial_id, {})
        history = result.get(self.history_key) if self.history_key else None
        if isinstance(history, (list, tuple)):
            for step, value in enumerate(history):
                values[step] = _as_float(value)
        step, value = result.get(self.step_key), result.get(self.metric)
        if step is None or value is None:
            return False
        values[int(step)] = _as_float(value)

        study = self._ensure_study()
        optuna_id = self._optuna_trial(trial_id)
        for known_step, known_value in values.items():
            self._storage.set_trial_intermediate_value(optuna_id, known_step, known_value)
        if result.get("done"):
            self._finish(trial_id, "complete", values[int(step)])
            return False
        frozen = self._storage.get_trial(optuna_id)
        if not self.pruner.prune(study, frozen):
            return False
        reason = self._reason(study, frozen, int(step))
        self._finish(trial_id, "pruned")
        self.stopped[trial_id] = StopRecord(trial_id, int(step), reason)
        if self.on_stop is not None:
            self.on_stop(trial_id, result, reason)
        return True

    def stop_all(self) -> bool:
        return False

    # ------------------------------------------------------------ helpers

    @property
    def study(self) -> optuna.Study:
        """The Optuna study mirroring the trials (rebuilt after unpickling)."""
        return self._ensure_study()

    def _reason(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial, step: int) -> str:
        decision = getattr(self.pruner, "decision", None)
        if callable(decision):  # DSEDegradationPruner explains itself
            return str(decision(study, frozen).reason)
        return f"{type(self.pruner).__name__} pruned at {self.step_key} {step}"

    def _ensure_study(self) -> optuna.Study:
        if self._study is None:
            self._storage = optuna.storages.InMemoryStorage()
            verbosity = optuna.logging.get_verbosity()
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line
            try:
                self._study = optuna.create_study(
                    storage=self._storage,
                    direction="maximize" if self.mode == "max" else "minimize",
                    pruner=self.pruner,
                    study_name="ray-tune-stopper",
                )
            finally:
                optuna.logging.set_verbosity(verbosity)
            self._optuna_ids = {}
            for trial_id, state in self._states.items():  # replay after unpickling
                optuna_id = self._optuna_trial(trial_id)
                for step, value in self._values.get(trial_id, {}).items():
                    self._storage.set_trial_intermediate_value(optuna_id, step, value)
                self._set_state(optuna_id, state, self._last_value(trial_id))
        return self._study

    def _optuna_trial(self, trial_id: str) -> int:
        if trial_id not in self._optuna_ids:
            study_id = self._storage.get_study_id_from_name(self._study.study_name)
            self._optuna_ids[trial_id] = self._storage.create_new_trial(study_id)
            self._states.setdefault(trial_id, "running")
        return self._optuna_ids[trial_id]

    def _finish(self, trial_id: str, state: str, value: float | None = None) -> None:
        self._states[trial_id] = state
        self._set_state(self._optuna_ids[trial_id], state, value)

    def _set_state(self, optuna_id: int, state: str, value: float | None) -> None:
        if state == "running":
            return
        if state == "pruned":
            self._storage.set_trial_state_values(optuna_id, TrialState.PRUNED)
        elif value is not None and math.isfinite(value):
            self._storage.set_trial_state_values(optuna_id, TrialState.COMPLETE, [value])
        else:  # Optuna refuses a non-finite objective value
            self._storage.set_trial_state_values(optuna_id, TrialState.FAIL)

    def _last_value(self, trial_id: str) -> float | None:
        values = self._values.get(trial_id) or {}
        return values[max(values)] if values else None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_study=None, _storage=None, _optuna_ids={})
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pruner!r}, metric={self.metric!r}, mode={self.mode!r})"


def mark_run_stopped(trial_id: str, result: Mapping[str, Any], reason: str) -> None:
    """``on_stop`` hook of a sweep: record in the trial's run folder that it was stopped.

    Sets ``stopped_early``/``stop_reason`` in ``dse_history.json`` (the selector shows
    them; the run's candidates stay selectable) and the status in ``trial.json``.
    """
    run_dir = result.get("run_dir")
    if not run_dir:
        return
    run_dir = Path(run_dir)
    history = _read_json(run_dir / "dse_history.json")
    if history is None:
        warnings.warn(
            f"cannot mark trial {trial_id} as stopped: no readable history in {run_dir} "
            "(is the storage shared with the driver?)",
            stacklevel=2,
        )
        return
    history["stopped_early"] = True
    history["stop_reason"] = f"stopped by the sweep's pruner: {reason}"
    trial_state = _read_json(run_dir / TRIAL_FILE) or {"trial_id": trial_id, "attempts": []}
    epoch = result.get("epoch")
    trial_state.update(
        status="stopped",
        stop_reason=reason,
        epochs_completed=None if epoch is None else int(epoch) + 1,
        finished=time.time(),
    )
    # This runs inside Tune's control loop: a failure here must not end the sweep.
    try:
        atomic_write_text(run_dir / "dse_history.json", json.dumps(history, indent=2) + "\n")
        _write_json(run_dir / TRIAL_FILE, trial_state)
        if history.get("evaluations"):
            # The trial is killed before its own end-of-fit plot; draw it here.
            from dse_tune.plotting import plot_dse_history

            plot_dse_history(history, run_dir / "dse_curve.png")
    except Exception as error:  # noqa: BLE001 (bookkeeping only; the stop itself stands)
        warnings.warn(f"could not record the stop of trial {trial_id} in {run_dir}: {error}", stacklevel=2)


# --------------------------------------------------------------------------- the sweep


def connect(address: str | None = None, *, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one.

    A local cluster gets ``num_cpus`` CPUs (default: those this process may use).
    Nothing happens if Ray is already initialized. Returns what was done, for logs.
    """
    import ray

    if ray.is_initialized():
        return "using the Ray session already running in this process"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address)
        return f"connected to the Ray cluster at {address}"
    cpus = num_cpus or _available_cpus()
    ray.init(num_cpus=cpus, include_dashboard=False)
    return f"started a local Ray cluster with {cpus} CPUs"


def build_tuner(
    spec: SweepSpec,
    sweep_dir: str | Path,
    *,
    data: str | None = None,
    trial_callbacks: Sequence[pl.Callback] = (),
    progress_reporter: Any = None,
    tune_callbacks: Sequence[tune.Callback] = (),
    verbose: int = 1,
) -> tune.Tuner:
    """A :class:`ray.tune.Tuner` for ``spec`` that writes the sweep into ``sweep_dir``.

    Search: OptunaSearch on :data:`METRIC` (``algorithm: optuna``) or Tune's variant
    generator (``random``, grids). Stopping: :class:`OptunaPrunerStopper` around the
    spec's pruner. Tune keeps ``checkpoints_to_keep`` checkpoints per trial, best DSE
    first, and retries a failed trial ``max_failures`` times from its latest one.

    The normalized search space and the data are saved into ``sweep_dir`` so that
    :func:`restore_tuner` can continue the sweep. Ray must be initialized (see
    :func:`connect`).
    """
    sweep_dir = Path(sweep_dir).resolve()
    if (sweep_dir / "tuner.pkl").exists():
        raise FileExistsError(
            f"{sweep_dir} already holds a sweep; resume it (dse-tune sweep --resume {sweep_dir}) "
            "or choose another folder"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    data = absolute_data(data if data is not None else spec.fixed.get("data"))
    # The normalized space (not the file: a spec may come from code) is what a
    # resumed sweep reparses.
    atomic_write_text(sweep_dir / SPACE_COPY, spec.to_yaml())
    _write_json(
        sweep_dir / SWEEP_FILE,
        {
            "name": spec.name,
            "space": SPACE_COPY,
            "source": None if spec.source is None else str(spec.source),
            "data": data,
            "total_trials": spec.total_trials,
            "created": time.time(),
        },
    )

    max_concurrent = spec.max_concurrent_trials
    if spec.algorithm == "optuna" and spec.dimensions:
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=METRIC, mode="max", seed=spec.sampler_seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Tune applies max_concurrent_trials to Searchers only; the variant generator
        # takes its own limit.
        search_alg = BasicVariantGenerator(random_state=spec.sampler_seed, max_concurrent=max_concurrent or 0)
        max_concurrent = None

    return tune.Tuner(
        _trainable_for(spec, data, trial_callbacks),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=search_alg,
            num_samples=spec.num_samples,
            max_concurrent_trials=max_concurrent,
            # A new trial reuses a finished trial's worker: no second start-up (imports,
            # CUDA context) per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name,
            storage_path=str(sweep_dir.parent),
            stop=_stopper_for(spec),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.checkpoints_to_keep,
                checkpoint_score_attribute="dse",
                checkpoint_score_order="max",
            ),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=progress_reporter,
            callbacks=list(tune_callbacks),
            verbose=verbose,
        ),
    )


def restore_tuner(
    sweep_dir: str | Path,
    *,
    data: str | None = None,
    trial_callbacks: Sequence[pl.Callback] = (),
) -> tuple[tune.Tuner, SweepSpec]:
    """Continue an interrupted sweep: unfinished and errored trials resume from their
    latest checkpoints; finished (and stopped) trials are kept as they are.

    ``data`` defaults to the one the sweep was started with.
    """
    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / "tuner.pkl").exists():
        raise FileNotFoundError(f"{sweep_dir} holds no sweep to resume (no tuner.pkl)")
    spec = load_saved_spec(sweep_dir)
    saved = _read_json(sweep_dir / SWEEP_FILE) or {}
    data = absolute_data(data) if data is not None else saved.get("data")
    tuner = tune.Tuner.restore(
        str(sweep_dir),
        _trainable_for(spec, data, trial_callbacks),
        resume_unfinished=True,
        resume_errored=True,
    )
    return tuner, spec


def load_saved_spec(sweep_dir: str | Path) -> SweepSpec:
    """The search space a sweep folder was started with (its normalized copy)."""
    from dse_tune.config import load_search_space

    sweep_dir = Path(sweep_dir)
    space = sweep_dir / SPACE_COPY
    if not space.is_file():
        raise FileNotFoundError(f"{sweep_dir} has no {SPACE_COPY}; it was not started by dse_tune's sweep")
    return load_search_space(space)


def run_sweep(
    spec: SweepSpec | None,
    sweep_dir: str | Path,
    *,
    data: str | None = None,
    resume: bool = False,
    trial_callbacks: Sequence[pl.Callback] = (),
    progress_reporter: Any = None,
    tune_callbacks: Sequence[tune.Callback] = (),
    verbose: int = 1,
) -> SweepSummary:
    """Run (or with ``resume`` continue) a sweep and summarize it.

    With a ``progress_reporter`` (e.g. :class:`ray.tune.CLIReporter`) Tune's classic
    progress table is printed (``verbose=0``: nothing). Writes ``sweep_summary.json``
    and returns :func:`summarize_sweep` of the sweep folder.
    """
    sweep_dir = Path(sweep_dir).resolve()
    if resume:
        tuner, spec = restore_tuner(sweep_dir, data=data, trial_callbacks=trial_callbacks)
    else:
        if spec is None:
            raise ValueError("spec is required unless resume=True")
        tuner = build_tuner(
            spec,
            sweep_dir,
            data=data,
            trial_callbacks=trial_callbacks,
            progress_reporter=progress_reporter,
            tune_callbacks=tune_callbacks,
            verbose=verbose,
        )
    with _classic_output():
        result_grid = tuner.fit()
    errored = [Path(result.path).name for result in result_grid if result.error is not None]
    summary = summarize_sweep(sweep_dir, spec, errored_trial_dirs=errored)
    _write_json(sweep_dir / SUMMARY_FILE, summary.to_dict())
    return summary


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a sweep, as its run folder tells it."""

    trial_id: str
    run_dir: Path
    #: ``finished``, ``stopped`` (pruner or the run's own rule), ``failed`` (retries
    #: exhausted) or ``unfinished`` (interrupted, or still running).
    status: str
    epochs_configured: int | None
    epochs_run: int
    evaluations: int
    attempts: int
    node_ids: tuple[str, ...] = ()
    stop_reason: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stopped_early(self) -> bool:
        return self.status == "stopped"


@dataclass(frozen=True)
class SweepSummary:
    """Every trial of a sweep and the compute pruning saved."""

    sweep_dir: Path
    trials: tuple[TrialSummary, ...]
    expected_trials: int | None = None

    @property
    def trial_epochs_run(self) -> int:
        return sum(t.epochs_run for t in self.trials)

    @property
    def trial_epochs_without_pruning(self) -> int:
        """What the same trials would have run without stopping: their configured epochs."""
        return sum(t.epochs_configured or 0 for t in self.trials)

    @property
    def complete(self) -> bool:
        """Every expected trial has finished, been stopped, or failed for good."""
        done = sum(t.status in ("finished", "stopped", "failed") for t in self.trials)
        return done >= (self.expected_trials or len(self.trials)) and done == len(self.trials)

    def describe(self) -> str:
        """One line: trial-epochs run versus without pruning."""
        run, full = self.trial_epochs_run, self.trial_epochs_without_pruning
        saved = f" ({1 - run / full:.0%} saved)" if full else ""
        stopped = sum(t.stopped_early for t in self.trials)
        return (
            f"trial-epochs run: {run} of {full} without pruning{saved}; "
            f"{stopped} of {len(self.trials)} trials stopped early"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "complete": self.complete,
            "expected_trials": self.expected_trials,
            "trial_epochs_run": self.trial_epochs_run,
            "trial_epochs_without_pruning": self.trial_epochs_without_pruning,
            "trials": [
                {
                    "trial_id": t.trial_id,
                    "run_dir": str(t.run_dir),
                    "status": t.status,
                    "epochs_configured": t.epochs_configured,
                    "epochs_run": t.epochs_run,
                    "evaluations": t.evaluations,
                    "attempts": t.attempts,
                    "node_ids": list(t.node_ids),
                    "stop_reason": t.stop_reason,
                }
                for t in self.trials
            ],
        }


def summarize_sweep(
    sweep_dir: str | Path,
    spec: SweepSpec | None = None,
    *,
    errored_trial_dirs: Iterable[str] = (),
) -> SweepSummary:
    """Read every run folder of a sweep into a :class:`SweepSummary`.

    Epochs run: the completed epochs of a finished trial, else one past the epoch of its
    last DSE evaluation (a stopped trial stops right after an evaluation). Epochs
    repeated by a retry after a crash are not counted. ``errored_trial_dirs``: names of
    Tune trial folders whose trial failed for good (``Result.error``).
    """
    sweep_dir = Path(sweep_dir)
    errored = list(errored_trial_dirs)
    trials = []
    runs_root = sweep_dir / RUNS_DIR
    run_dirs = sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []
    for run_dir in run_dirs:
        state = _read_json(run_dir / TRIAL_FILE) or {}
        history = _read_json(run_dir / "dse_history.json") or {}
        config = _read_json(run_dir / "config.json") or history.get("config") or {}
        evaluations = history.get("evaluations") or []
        status = state.get("status", "unfinished")
        if history.get("stopped_early"):
            status = "stopped"
        elif status == "running":
            # Tune's trial folder names contain the trial id.
            status = "failed" if any(run_dir.name in name for name in errored) else "unfinished"
        last_epoch = int(evaluations[-1]["epoch"]) + 1 if evaluations else 0
        epochs_run = state.get("epochs_completed") if status in ("finished", "stopped") else None
        attempts = state.get("attempts") or []
        trials.append(
            TrialSummary(
                trial_id=run_dir.name,
                run_dir=run_dir,
                status=status,
                epochs_configured=config.get("epochs"),
                epochs_run=int(epochs_run) if epochs_run is not None else last_epoch,
                evaluations=len(evaluations),
                attempts=len(attempts),
                node_ids=tuple(a.get("node_id") for a in attempts if a.get("node_id")),
                stop_reason=history.get("stop_reason") or state.get("stop_reason"),
                config=config,
            )
        )
    return SweepSummary(sweep_dir, tuple(trials), None if spec is None else spec.total_trials)


# --------------------------------------------------------------------------- helpers


def _trainable_for(spec: SweepSpec, data: str | None, trial_callbacks: Sequence[pl.Callback]) -> Any:
    trainable = tune.with_parameters(
        pretrain_trainable,
        base_config=spec.base_config(),
        data=data,
        accelerator=spec.resources.accelerator,
        callbacks=list(trial_callbacks),
    )
    return tune.with_resources(trainable, spec.resources.to_tune())


def _stopper_for(spec: SweepSpec) -> OptunaPrunerStopper | None:
    pruner = spec.build_pruner()
    if pruner is None:
        return None
    return OptunaPrunerStopper(pruner, metric="dse", mode="max", on_stop=mark_run_stopped)


def absolute_data(data: str | os.PathLike | None) -> str | None:
    """``data`` with a relative folder made absolute: trials run in their own folders."""
    if data is None or str(data) == "synthetic":
        return None if data is None else "synthetic"
    return str(Path(data).expanduser().resolve())


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _classic_output():
    # Tune's newer console output ignores progress reporters (and prints even at
    # verbose=0); RAY_AIR_NEW_OUTPUT=0 brings back the classic table of a CLIReporter.
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
