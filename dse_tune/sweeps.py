"""A sweep folder besides its run folders: trial attempts, the start record, the summary.

A sweep folder (``SWEEP_DIR``, written by ``dse-tune sweep``; this module needs neither
Ray nor torch) holds one run folder per trial under :data:`RUNS_DIR`
(:mod:`dse_tune.runs`), the tuner's own state (:data:`dse_tune.runs.TUNER_STATE_FILE`)
and these files:

- :data:`SPACE_COPY`: the normalized search space, what a resumed sweep reparses;
- :data:`SWEEP_FILE`: name, source, data and number of trials the sweep started with;
- :data:`SUMMARY_FILE`: the final :class:`SweepSummary`;
- ``runs/<trial_id>/``:data:`TRIAL_FILE`: the trial's attempts (node, pid, devices, the
  evaluation each resumed from) and whether its last attempt finished. Everything
  else about a trial (evaluations, a stop and its reason) is its run folder's.

Example:
    >>> import tempfile
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
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse_tune.atomic import atomic_write_json, atomic_write_text
from dse_tune.runs import SWEEP_RUNS_DIR, RunRecord, history_file, read_config, read_json_object, read_run

if TYPE_CHECKING:
    from dse_tune.search_space import SweepSpec

__all__ = [
    "RUNS_DIR",
    "SPACE_COPY",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "TRIAL_FILE",
    "SweepSummary",
    "TrialSummary",
    "absolute_data",
    "finish_attempt",
    "load_saved_spec",
    "read_trial_state",
    "save_sweep_record",
    "saved_data",
    "start_attempt",
    "summarize_sweep",
    "write_json",
]

#: Run folders of a sweep's trials: ``SWEEP_DIR/runs/<trial_id>``.
RUNS_DIR = SWEEP_RUNS_DIR
TRIAL_FILE = "trial.json"
SPACE_COPY = "search_space.yaml"
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "sweep_summary.json"


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        return read_json_object(path)
    except (OSError, ValueError):
        return None


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (a reader never sees half a file); values JSON
    cannot hold (paths, ...) as text."""
    atomic_write_json(path, data, default=str)


# --------------------------------------------------------------------------- attempts


def read_trial_state(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The trial's :data:`TRIAL_FILE`, or None when it is missing or unreadable."""
    return read_json(Path(run_dir) / TRIAL_FILE)


def start_attempt(run_dir: Path, trial_id: str, *, node_id: str | None = None, **details: Any) -> int:
    """Append an attempt (host, pid, ``details``) to :data:`TRIAL_FILE`; its number.

    Example:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> start_attempt(run_dir, "t", resumed_from_evaluation=None), start_attempt(run_dir, "t")
        (1, 2)
        >>> finish_attempt(run_dir, 1)  # a superseded attempt finishing late changes nothing
        >>> read_trial_state(run_dir)["status"]
        'running'
        >>> finish_attempt(run_dir, 2); read_trial_state(run_dir)["status"]
        'finished'
    """
    state = read_trial_state(run_dir) or {"trial_id": trial_id, "attempts": []}
    number = len(state["attempts"]) + 1
    host = socket.gethostname()
    attempt = {"attempt": number, "node_id": node_id or host, "hostname": host, "pid": os.getpid(),
               "started": time.time(), **details}
    state.update(status="running", attempts=[*state["attempts"], attempt])
    write_json(Path(run_dir) / TRIAL_FILE, state)
    return number


def finish_attempt(run_dir: Path, attempt: int) -> None:
    """Record that ``attempt`` trained to its end, unless a later attempt superseded it
    (an attempt presumed dead, its node removed, can finish after Tune's retry began)."""
    state = read_trial_state(run_dir) or {"attempts": []}
    if state["attempts"] and state["attempts"][-1].get("attempt") == attempt:
        state.update(status="finished", finished=time.time())
        write_json(Path(run_dir) / TRIAL_FILE, state)


# --------------------------------------------------------------------------- sweep record


def save_sweep_record(spec: SweepSpec, sweep_dir: Path, data: str | None) -> None:
    """Write :data:`SPACE_COPY` and :data:`SWEEP_FILE` into ``sweep_dir`` (created)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / SPACE_COPY, spec.to_yaml())
    source = None if spec.source is None else str(spec.source)
    write_json(sweep_dir / SWEEP_FILE, {"name": spec.name, "space": SPACE_COPY, "source": source, "data": data,
                                        "total_trials": spec.total_trials, "created": time.time()})


def load_saved_spec(sweep_dir: str | os.PathLike) -> SweepSpec:
    """The search space a sweep folder was started with (its normalized copy)."""
    from dse_tune.search_space import load_search_space

    space = Path(sweep_dir) / SPACE_COPY
    if not space.is_file():
        raise FileNotFoundError(f"{sweep_dir} has no {SPACE_COPY}; it was not started by dse_tune's sweep")
    return load_search_space(space)


def saved_data(sweep_dir: str | os.PathLike) -> str | None:
    """The data the sweep was started with (None: each trial's configured data)."""
    return (read_json(Path(sweep_dir) / SWEEP_FILE) or {}).get("data")


def absolute_data(data: str | os.PathLike | None) -> str | None:
    """``data`` with a relative folder made absolute: trials run in their own folders.

    Example:
        >>> absolute_data("synthetic"), absolute_data(None)
        ('synthetic', None)
    """
    if data is None or str(data) == "synthetic":
        return None if data is None else "synthetic"
    return str(Path(data).expanduser().resolve())


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a sweep, as its run folder tells it."""

    trial_id: str
    run_dir: Path
    #: ``finished``, ``stopped`` (early, by the sweep's pruner or the run's own rule: the only
    #: pruning), ``failed`` (retries exhausted) or ``interrupted`` (resume continues it).
    status: str
    epochs_configured: int | None
    epochs_run: int
    evaluations: int
    attempts: int
    node_ids: tuple[str, ...] = ()
    stop_reason: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    #: The run's peak DSE (:func:`dse_tune.degradation.peak`), None when none is finite.
    best_dse: float | None = None

    @property
    def stopped_early(self) -> bool:
        return self.status == "stopped"

    @property
    def epochs_saved(self) -> int:
        """Epochs pruning spared a stopped trial (an interrupted one saved nothing)."""
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
        line = f"trial-epochs run: {run} of {full} without pruning{saved}; {stopped} of {len(self.trials)} trials stopped early"
        if self.interrupted:
            left = sum(t.epochs_left for t in self.interrupted)
            line += f"; {len(self.interrupted)} interrupted ({left} trial-epochs still to run: dse-tune sweep --resume)"
        return line

    def to_dict(self) -> dict[str, Any]:
        keys = ("trial_id", "status", "epochs_configured", "epochs_run", "evaluations", "best_dse", "attempts",
                "stop_reason")
        trials = [{**{key: getattr(t, key) for key in keys}, "run_dir": str(t.run_dir), "node_ids": list(t.node_ids)}
                  for t in self.trials]
        return {
            "sweep_dir": str(self.sweep_dir),
            "complete": self.complete,
            "expected_trials": self.expected_trials,
            "trial_epochs_run": self.trial_epochs_run,
            "trial_epochs_without_pruning": self.trial_epochs_without_pruning,
            "trial_epochs_saved_by_pruning": self.trial_epochs_saved,
            "interrupted_trials": [t.trial_id for t in self.interrupted],
            "trials": trials,
        }


def summarize_sweep(
    sweep_dir: str | os.PathLike, spec: SweepSpec | None = None, *, errored_trial_dirs: Iterable[str] = ()
) -> SweepSummary:
    """Read every run folder of a sweep into a :class:`SweepSummary`. ``errored_trial_dirs``:
    names of the tuner's trial folders (they contain the trial id) that failed for good."""
    runs_root = Path(sweep_dir) / RUNS_DIR
    run_dirs = sorted(p for p in runs_root.iterdir() if p.is_dir()) if runs_root.is_dir() else []
    errored = list(errored_trial_dirs)
    trials = tuple(summarize_trial(run_dir, errored) for run_dir in run_dirs)
    return SweepSummary(Path(sweep_dir), trials, None if spec is None else spec.total_trials)


def summarize_trial(run_dir: Path, errored_trial_dirs: Iterable[str] = ()) -> TrialSummary:
    """One trial from its run folder and :data:`TRIAL_FILE`.

    Epochs run: the configured epochs of a finished trial, else one past the epoch of
    its last DSE evaluation (a stopped trial stops right after an evaluation); epochs a
    retry repeated after a crash are not counted.
    """
    state = read_trial_state(run_dir) or {}
    run = _read_run_if_any(run_dir)
    try:
        config = read_config(run_dir)
    except (OSError, ValueError):
        config = dict(run.config)
    epochs = config.get("epochs")
    if run.stopped_early:
        status = "stopped"
    elif state.get("status") == "finished":
        status = "finished"
    else:
        status = "failed" if any(run_dir.name in name for name in errored_trial_dirs) else "interrupted"
    last = run.evaluations[-1] if run.evaluations else None
    last_epoch = 0 if last is None else (last.index if last.epoch is None else last.epoch) + 1
    attempts = state.get("attempts") or []
    return TrialSummary(
        trial_id=run_dir.name,
        run_dir=run_dir,
        status=status,
        epochs_configured=epochs,
        epochs_run=int(epochs) if status == "finished" and epochs is not None else last_epoch,
        evaluations=len(run.evaluations),
        attempts=len(attempts),
        node_ids=tuple(a.get("node_id") for a in attempts if a.get("node_id")),
        stop_reason=run.stop_reason,
        config=config,
        best_dse=run.peak.value,
    )


def _read_run_if_any(run_dir: Path) -> RunRecord:
    # A trial that just started has no history yet; an unreadable one is the selector's
    # to report. Either way the summary counts no evaluations.
    if not history_file(run_dir).is_file():
        return RunRecord(name=run_dir.name, path=run_dir)
    try:
        return read_run(run_dir, name=run_dir.name)
    except (OSError, ValueError) as error:
        return RunRecord(name=run_dir.name, path=run_dir, problem=str(error))
