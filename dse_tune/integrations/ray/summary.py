"""What a sweep did, read from its run folders: per-trial status and the compute saved.

:func:`summarize_sweep` reads every run folder of a sweep (:mod:`dse_tune.runs` for the
history and settings, :data:`~dse_tune.integrations.ray.trainable.TRIAL_FILE` for the
attempts) into a :class:`SweepSummary`: each trial's status, epochs run and peak DSE,
and the trial-epochs run versus a sweep without pruning.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from dse_tune.runs import RunRecord, write_config, write_run
    >>> sweep = Path(tempfile.mkdtemp())
    >>> _ = write_run(sweep / "runs" / "t0", RunRecord.from_values("t0", [float("nan"), 0.4, 0.3]))
    >>> _ = write_config(sweep / "runs" / "t0", {"epochs": 10})
    >>> summary = summarize_sweep(sweep)
    >>> trial = summary.trials[0]
    >>> trial.status, trial.epochs_run, trial.best_dse
    ('interrupted', 3, 0.4)
    >>> summary.describe()  # an interruption is not pruning: nothing saved
    'trial-epochs run: 3 of 10 without pruning (0% saved by pruning); 0 of 1 trials stopped early; 1 interrupted (7 trial-epochs still to run: dse-tune sweep --resume)'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse_tune.integrations.ray.trainable import RUNS_DIR, read_trial_state
from dse_tune.runs import RunRecord, history_file, read_config, read_run

if TYPE_CHECKING:
    from dse_tune.search_space import SweepSpec

__all__ = ["SweepSummary", "TrialSummary", "summarize_sweep"]


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a sweep, as its run folder tells it."""

    trial_id: str
    run_dir: Path
    #: ``finished``, ``stopped`` (pruner or the run's own rule), ``failed`` (retries
    #: exhausted) or ``interrupted`` (the sweep ended before the trial did, or it is
    #: still running: resume continues it). Only ``stopped`` counts as pruning.
    status: str
    epochs_configured: int | None
    epochs_run: int
    evaluations: int
    attempts: int
    node_ids: tuple[str, ...] = ()
    stop_reason: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    #: The run's peak DSE (:func:`dse_tune.degradation.peak`: NaN-safe), None when no
    #: evaluation is finite.
    best_dse: float | None = None

    @property
    def stopped_early(self) -> bool:
        return self.status == "stopped"

    @property
    def epochs_saved(self) -> int:
        """Epochs pruning spared this trial: configured minus run, for a stopped trial
        only (an interrupted or failed trial saved nothing; it just has not run them)."""
        if not self.stopped_early or self.epochs_configured is None:
            return 0
        return max(0, int(self.epochs_configured) - self.epochs_run)

    @property
    def epochs_left(self) -> int:
        """Epochs an interrupted trial still has to run (0 for any other status)."""
        if self.status != "interrupted" or self.epochs_configured is None:
            return 0
        return max(0, int(self.epochs_configured) - self.epochs_run)


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
    def trial_epochs_saved(self) -> int:
        """Trial-epochs pruning saved: stopped trials only (never an interruption)."""
        return sum(t.epochs_saved for t in self.trials)

    @property
    def interrupted(self) -> tuple[TrialSummary, ...]:
        return tuple(t for t in self.trials if t.status == "interrupted")

    @property
    def complete(self) -> bool:
        """Every expected trial has finished, been stopped, or failed for good."""
        done = sum(t.status in ("finished", "stopped", "failed") for t in self.trials)
        return done >= (self.expected_trials or len(self.trials)) and done == len(self.trials)

    def describe(self) -> str:
        """One line: trial-epochs run versus without pruning, what pruning saved (real
        stops only) and, apart, the interrupted trials."""
        run, full = self.trial_epochs_run, self.trial_epochs_without_pruning
        saved = f" ({self.trial_epochs_saved / full:.0%} saved by pruning)" if full else ""
        stopped = sum(t.stopped_early for t in self.trials)
        line = (
            f"trial-epochs run: {run} of {full} without pruning{saved}; "
            f"{stopped} of {len(self.trials)} trials stopped early"
        )
        if self.interrupted:
            left = sum(t.epochs_left for t in self.interrupted)
            line += (
                f"; {len(self.interrupted)} interrupted ({left} trial-epochs still to run: "
                "dse-tune sweep --resume)"
            )
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "complete": self.complete,
            "expected_trials": self.expected_trials,
            "trial_epochs_run": self.trial_epochs_run,
            "trial_epochs_without_pruning": self.trial_epochs_without_pruning,
            "trial_epochs_saved_by_pruning": self.trial_epochs_saved,
            "interrupted_trials": [t.trial_id for t in self.interrupted],
            "trials": [
                {
                    "trial_id": t.trial_id,
                    "run_dir": str(t.run_dir),
                    "status": t.status,
                    "epochs_configured": t.epochs_configured,
                    "epochs_run": t.epochs_run,
                    "evaluations": t.evaluations,
                    "best_dse": t.best_dse,
                    "attempts": t.attempts,
                    "node_ids": list(t.node_ids),
                    "stop_reason": t.stop_reason,
                }
                for t in self.trials
            ],
        }


def summarize_sweep(
    sweep_dir: str | os.PathLike,
    spec: SweepSpec | None = None,
    *,
    errored_trial_dirs: Iterable[str] = (),
) -> SweepSummary:
    """Read every run folder of a sweep into a :class:`SweepSummary`.

    Epochs run: the completed epochs of a finished trial, else one past the epoch of its
    last DSE evaluation (a stopped trial stops right after an evaluation). Epochs
    repeated by a retry after a crash are not counted. Only trials the pruner (or the
    run's own rule) stopped count as saved compute: an interrupted trial is
    ``interrupted``, its epochs still to run are not savings. ``errored_trial_dirs``: names of
    Tune trial folders whose trial failed for good (``Result.error``).
    """
    sweep_dir = Path(sweep_dir)
    errored = list(errored_trial_dirs)
    runs_root = sweep_dir / RUNS_DIR
    run_dirs = sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []
    trials = tuple(summarize_trial(run_dir, errored) for run_dir in run_dirs)
    return SweepSummary(sweep_dir, trials, None if spec is None else spec.total_trials)


def summarize_trial(run_dir: Path, errored_trial_dirs: Iterable[str] = ()) -> TrialSummary:
    """One trial's :class:`TrialSummary` from its run folder (a trial that has not
    written its history yet has no evaluations)."""
    state = read_trial_state(run_dir) or {}
    run = _read_run_if_any(run_dir)
    try:
        config = read_config(run_dir)
    except (OSError, ValueError):
        config = dict(run.config)
    status = state.get("status", "interrupted")
    if run.stopped_early:
        status = "stopped"
    elif status in ("running", "interrupted"):
        # Tune's trial folder names contain the trial id.
        status = "failed" if any(run_dir.name in name for name in errored_trial_dirs) else "interrupted"
    last = run.evaluations[-1] if run.evaluations else None
    last_epoch = 0 if last is None else (last.index if last.epoch is None else last.epoch) + 1
    epochs_run = state.get("epochs_completed") if status in ("finished", "stopped") else None
    attempts = state.get("attempts") or []
    return TrialSummary(
        trial_id=run_dir.name,
        run_dir=run_dir,
        status=status,
        epochs_configured=config.get("epochs"),
        epochs_run=int(epochs_run) if epochs_run is not None else last_epoch,
        evaluations=len(run.evaluations),
        attempts=len(attempts),
        node_ids=tuple(a.get("node_id") for a in attempts if a.get("node_id")),
        stop_reason=run.stop_reason or state.get("stop_reason"),
        config=config,
        best_dse=run.peak.value,
    )


def _read_run_if_any(run_dir: Path) -> RunRecord:
    # A trial that just started has no history yet; an unreadable one is the selector's
    # to report. Either way the summary (bookkeeping) counts no evaluations.
    if not history_file(run_dir).is_file():
        return RunRecord(name=run_dir.name, path=run_dir)
    try:
        return read_run(run_dir, name=run_dir.name)
    except (OSError, ValueError) as error:
        return RunRecord(name=run_dir.name, path=run_dir, problem=str(error))
