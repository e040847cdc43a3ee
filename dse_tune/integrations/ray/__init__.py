"""Ray Tune adapter: label-free sweeps of DSE-monitored pretraining runs.

Pieces, from the inside out:

- :mod:`~dse_tune.integrations.ray.reporter`: :class:`TuneReporter`, the run listener
  inside a trial that reports each DSE evaluation (``dse``, its components,
  ``dse_best``, ``epoch``, ``evaluation``) to Tune with a :class:`ray.tune.Checkpoint`
  holding that evaluation's checkpoint and the history so far.
- :mod:`~dse_tune.integrations.ray.trainable`: :func:`pretrain_trainable`, one
  :func:`dse_tune.ssl.pretrain.pretrain` run per trial in ``SWEEP_DIR/runs/<trial_id>``
  (a run folder of :mod:`dse_tune.runs`), resumed from Tune's checkpoint after a crash.
- :mod:`~dse_tune.integrations.ray.distributed`: a trial over several workers
  (``resources: {workers: N, ...}``): a Ray Train ``TorchTrainer`` run from the Tune
  trial, Lightning's Ray DDP strategy on each worker, the same run folder, reports,
  stops and resume.
- :mod:`~dse_tune.integrations.ray.stopper`: :class:`OptunaPrunerStopper`, a
  :class:`ray.tune.Stopper` around any Optuna pruner
  (:class:`~dse_tune.integrations.optuna.DSEDegradationPruner` by default), so the
  degradation rule stops a Tune trial at the same evaluation as everywhere else.
- :mod:`~dse_tune.integrations.ray.space`: a search space
  (:mod:`dse_tune.search_space`) as Tune domains and resources.
- :mod:`~dse_tune.integrations.ray.sweep`: :func:`build_tuner` / :func:`restore_tuner`
  / :func:`run_sweep`, a whole sweep from a :class:`~dse_tune.search_space.SweepSpec`;
  :mod:`~dse_tune.integrations.ray.sweep_folder`: the sweep folder's own files.
- :mod:`~dse_tune.integrations.ray.summary`: :func:`summarize_sweep`, per-trial status
  and the trial-epochs run versus a sweep without pruning.
- :mod:`~dse_tune.integrations.ray.selection`: after the trials, rescore the candidates
  on held-out images and pick the checkpoint (what ``dse-tune sweep`` runs last).
"""

from __future__ import annotations

from dse_tune.integrations.ray.reporter import CHECKPOINT_FILE, CHECKPOINT_STATE_FILE, METRIC, TuneReporter
from dse_tune.integrations.ray.space import param_space, tune_domain, tune_resources
from dse_tune.integrations.ray.stopper import OptunaPrunerStopper, StopRecord
from dse_tune.integrations.ray.summary import SweepSummary, TrialSummary, summarize_sweep
from dse_tune.integrations.ray.sweep import build_tuner, connect, progress_reporter, restore_tuner, run_sweep
from dse_tune.integrations.ray.sweep_folder import absolute_data, load_saved_spec
from dse_tune.integrations.ray.trainable import (
    RUNS_DIR,
    TRIAL_FILE,
    mark_run_stopped,
    pretrain_trainable,
    record_verdict,
    run_dir_of_trial,
    trial_devices,
)

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
    "TuneReporter",
    "absolute_data",
    "build_tuner",
    "connect",
    "load_saved_spec",
    "mark_run_stopped",
    "param_space",
    "pretrain_trainable",
    "progress_reporter",
    "record_verdict",
    "restore_tuner",
    "run_dir_of_trial",
    "run_sweep",
    "summarize_sweep",
    "tune_domain",
    "trial_devices",
    "tune_resources",
]
