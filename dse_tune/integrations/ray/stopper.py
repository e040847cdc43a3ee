"""A Ray Tune stopper around any Optuna pruner: the degradation rule inside Tune.

Ray's ``OptunaSearch`` cannot prune (it pins Optuna's NopPruner), hence a stopper that
asks the pruner after every result, so a Tune trial stops at the same evaluation as a
Lightning run or an Optuna trial would, and records the stop in the trial's run folder.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune

from dse_tune.integrations.optuna.pruner import NOISE_ATTR, DSEDegradationPruner
from dse_tune.runs import CURVE_PLOT, mark_stopped

__all__ = ["OptunaPrunerStopper", "StopRecord", "mark_run_stopped"]


def mark_run_stopped(trial_id: str, result: Mapping[str, Any], reason: str) -> None:
    """The default ``on_stop``: record in the trial's run folder (``result["run_dir"]``)
    that the stopper ended it (:func:`dse_tune.runs.mark_stopped`) and draw its DSE curve.
    Inside Tune's control loop a failure only warns; the stop itself stands."""
    run_dir = result.get("run_dir")
    if not run_dir:
        return
    try:
        run = mark_stopped(run_dir, f"stopped by the sweep's pruner: {reason}")
    except (OSError, ValueError) as error:
        warnings.warn(f"cannot mark trial {trial_id} as stopped: no readable history in {run_dir} "
                      f"(is the storage shared with the driver?): {error}", stacklevel=2)
        return
    try:
        from dse_tune.plotting import plot_dse_history

        if run.evaluations:
            plot_dse_history(run, Path(run_dir) / CURVE_PLOT)
    except Exception as error:  # noqa: BLE001 (a plot only; the stop is recorded)
        warnings.warn(f"could not draw the DSE curve of stopped trial {trial_id} in {run_dir}: {error}", stacklevel=2)


@dataclass(frozen=True)
class StopRecord:
    """Why and where :class:`OptunaPrunerStopper` stopped a trial."""

    trial_id: str
    step: int
    reason: str


class OptunaPrunerStopper(tune.Stopper):
    """A Ray Tune stopper that asks an Optuna pruner whether to stop each trial.

    It keeps an in-memory Optuna study with one trial per Tune trial; every result's
    ``metric`` is that trial's intermediate value at step ``result[step_key]``, then
    ``pruner.prune(study, trial)`` decides. A final result (``done``) completes the Optuna
    trial, so pruners that compare with finished trials (``MedianPruner``) see them.
    Results without ``metric`` are ignored; a stopped trial stays stopped; ``stopped``
    maps trial ids to :class:`StopRecord`.

    Args:
        pruner: any Optuna pruner; default
            :class:`~dse_tune.integrations.optuna.DSEDegradationPruner`.
        mode: ``"max"`` (DSE) or ``"min"``: the study direction.
        step_key: the result key used as the Optuna step (a 0-based evaluation count);
            without it a result is stepped by Tune's ``training_iteration - 1``, so a bare
            ``dse`` report is still judged; with neither, :class:`KeyError`.
        history_key: the key of the metric's values so far (a list indexed by step),
            which fill steps this stopper missed (a restored sweep). None to ignore.
        on_stop: called as ``on_stop(trial_id, result, reason)`` on a stop (picklable:
            Tune saves the stopper with the sweep); default :func:`mark_run_stopped`.

    Example:
        >>> stopper = OptunaPrunerStopper()  # DSEDegradationPruner(): warm-up 5, patience 3
        >>> dse = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65]
        >>> [stopper("t1", {"evaluation": i, "dse": v}) for i, v in enumerate(dse)][-2:]
        [False, True]
        >>> stopper.stopped["t1"].step
        9

    A bare ``dse`` report is stepped by Tune's ``training_iteration``:

        >>> bare = OptunaPrunerStopper()
        >>> [bare("t2", {"training_iteration": i + 1, "dse": v}) for i, v in enumerate(dse)][-1]
        True
    """

    def __init__(
        self, pruner: optuna.pruners.BasePruner | None = None, *, metric: str = "dse", mode: str = "max",
        step_key: str = "evaluation", history_key: str | None = "dse_history",
        on_stop: Callable[[str, Mapping[str, Any], str], None] | None = mark_run_stopped,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if pruner is None:
            pruner = DSEDegradationPruner()
        if not isinstance(pruner, optuna.pruners.BasePruner):
            raise TypeError(f"pruner must be an optuna pruner, got {type(pruner).__name__}")
        self.pruner, self.metric, self.mode = pruner, metric, mode
        self.step_key, self.history_key, self.on_stop = step_key, history_key, on_stop
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
        value = result.get(self.metric)
        if value is None:
            return False
        step = self.step_of(result)
        values[step] = _as_float(value)

        study = self._ensure_study()
        optuna_id = self._optuna_trial(trial_id)
        for known_step, known_value in values.items():
            self._storage.set_trial_intermediate_value(optuna_id, known_step, known_value)
        noise = result.get("dse_noise")
        if noise is not None and math.isfinite(noise):  # drops within the noise do not stop, as in the tracker
            self._storage.set_trial_user_attr(optuna_id, f"{NOISE_ATTR}:{step}", float(noise))
        if result.get("done"):
            self._finish(trial_id, "complete", values[step])
            return False
        frozen = self._storage.get_trial(optuna_id)
        if not self.pruner.prune(study, frozen):
            return False
        reason = self._reason(study, frozen, step)
        self._finish(trial_id, "pruned")
        self.stopped[trial_id] = StopRecord(trial_id, step, reason)
        if self.on_stop is not None:
            self.on_stop(trial_id, result, reason)
        return True

    def step_of(self, result: Mapping[str, Any]) -> int:
        """The Optuna step of ``result``: ``result[step_key]``, else Tune's
        ``training_iteration - 1``; :class:`KeyError` naming both when neither is there."""
        step = result.get(self.step_key)
        if step is not None:
            return int(step)
        iteration = result.get("training_iteration")
        if iteration is not None:
            return int(iteration) - 1
        raise KeyError(f"{type(self).__name__}: a result with {self.metric!r} has neither {self.step_key!r} "
                       f"nor Tune's 'training_iteration', so no step to judge it at: report {self.step_key!r} "
                       f"or pass step_key=... (result keys: {sorted(result)})")

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
                direction = "maximize" if self.mode == "max" else "minimize"
                self._study = optuna.create_study(storage=self._storage, direction=direction, pruner=self.pruner,
                                                  study_name="ray-tune-stopper")
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


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

