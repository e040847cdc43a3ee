"""Ray Tune adapter: label-free sweeps of DSE-monitored pretraining runs.

- :class:`TuneReporter` (``reporter``): the run listener that reports each DSE evaluation
  to Tune, for any loop with a :class:`~dse_tune.tracker.DSETracker`
  (``examples/ray_own_trainable.py``);
- :class:`OptunaPrunerStopper` (``stopper``): a :class:`ray.tune.Stopper` around any Optuna
  pruner, which marks a stopped trial's run folder (:func:`mark_run_stopped`);
- :func:`pretrain_trainable` (``trainable``; ``distributed`` over several Ray Train
  workers): one pretraining run per trial in ``SWEEP_DIR/runs/<trial_id>``;
- ``space``: Tune domains and resources; ``sweep``: :func:`build_tuner`,
  :func:`restore_tuner`, :func:`run_sweep` from a :class:`~dse_tune.search_space.SweepSpec`.

The sweep folder's own files are :mod:`dse_tune.sweeps` (no Ray); the selection after the
trials is :mod:`dse_tune.evaluation.sweep_selection`.
"""

from __future__ import annotations

from dse_tune.integrations.ray.reporter import METRIC, TuneReporter
from dse_tune.integrations.ray.space import param_space, tune_domain, tune_resources
from dse_tune.integrations.ray.stopper import OptunaPrunerStopper, StopRecord, mark_run_stopped
from dse_tune.integrations.ray.sweep import build_tuner, connect, progress_reporter, restore_tuner, run_sweep
from dse_tune.integrations.ray.trainable import pretrain_trainable, run_dir_of_trial, trial_devices

__all__ = [
    "METRIC",
    "OptunaPrunerStopper",
    "StopRecord",
    "TuneReporter",
    "build_tuner",
    "connect",
    "mark_run_stopped",
    "param_space",
    "pretrain_trainable",
    "progress_reporter",
    "restore_tuner",
    "run_dir_of_trial",
    "run_sweep",
    "trial_devices",
    "tune_domain",
    "tune_resources",
]
