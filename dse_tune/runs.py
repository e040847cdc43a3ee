"""THE run folder: its file names, typed records, and atomic reads and writes.

Every writer of a run (the framework-free tracker, the Lightning monitor, the Ray
trainable) and every reader (selection, rescore, validate, plots, the CLI) goes through
this module; no other module names ``dse_history.json``. The format is a documented,
versioned contract (``docs/run-folder.md``), so other tools can write it too::

    RUN_DIR/
      dse_history.json   {"format_version": 1, "config": {...}, "evaluations": [...],
                          "stopped_early": false, "stop_reason": null}
      dse_history.csv    the evaluations as a table (a convenience copy)
      config.json        the run's settings (optional; the history holds a copy)
      dse_curve.png      DSE and its components (optional)
      checkpoints/       one file per evaluation, paths recorded relative to RUN_DIR

Standard library only (plus the decision modules): no torch, Lightning, Ray or Optuna.

Example:
    >>> import tempfile
    >>> run = RunRecord.from_values("a", [0.1, 0.4, 0.3], checkpoints=["c0.pt", "c1.pt", "c2.pt"])
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_run(folder, run)
    >>> again = read_run(folder)
    >>> again.dse, again.best.checkpoint
    ([0.1, 0.4, 0.3], 'c1.pt')
    >>> mark_stopped(folder, "degraded").stop_reason
    'degraded'
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse_tune.atomic import atomic_write_text
from dse_tune.decision import is_untrained, ranking_verdict_of, run_choice
from dse_tune.degradation import Peak, peak

__all__ = [
    "CHECKPOINT_DIR",
    "COMPONENTS",
    "CONFIG_FILE",
    "CURVE_PLOT",
    "EVALUATION_KEYS",
    "FORMAT_VERSION",
    "HISTORY_CSV",
    "HISTORY_FILE",
    "LAST_CHECKPOINT",
    "SELECTION_FILE",
    "SWEEP_RUNS_DIR",
    "TUNER_STATE_FILE",
    "Evaluation",
    "RunFormatError",
    "RunRecord",
    "find_runs",
    "history_to_csv",
    "is_sweep",
    "load_sweep",
    "mark_stopped",
    "read_config",
    "read_json_file",
    "read_json_object",
    "read_run",
    "relative_path",
    "write_config",
    "write_run",
]

#: Version of the history format. A reader accepts this version and older (a file
#: without the key is version 1); a newer file is refused with a clear error.
FORMAT_VERSION = 1

HISTORY_FILE = "dse_history.json"
HISTORY_CSV = "dse_history.csv"
CONFIG_FILE = "config.json"
CURVE_PLOT = "dse_curve.png"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/last.ckpt"
SELECTION_FILE = "selection.json"
#: A sweep folder: Ray Tune's state file and one run folder per trial under ``runs/``.
TUNER_STATE_FILE = "tuner.pkl"
SWEEP_RUNS_DIR = "runs"

COMPONENTS = ("inter", "intra_image", "intra_batch", "dim")
EVALUATION_KEYS = ("index", "epoch", "global_step", "dse", "dse_noise", *COMPONENTS, "checkpoint", "seconds", "failure")


class RunFormatError(ValueError):
    """A run file exists but does not follow the format; the message names file and field."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Evaluation:
    """One DSE evaluation of a run: one row of ``dse_history.json``.

    Attributes:
        index: position in the run's evaluation order (0-based).
        dse: the DSE score; NaN when it could not be computed, and ``failure`` says why
            (diverged or collapsed features, an unreadable checkpoint).
        epoch, global_step: 0-based training epoch and optimizer step (None: unknown).
        checkpoint: the weights scored, relative to the run folder or absolute.
        seconds: time the evaluation took (features + DSE).
        components: raw components ``inter``, ``intra_image``, ``intra_batch``, ``dim``.
        noise: the standard error of ``dse`` (``dse_noise`` in the file), None when not measured.
    """

    index: int
    dse: float
    epoch: int | None = None
    global_step: int | None = None
    checkpoint: str | None = None
    seconds: float | None = None
    components: Mapping[str, float] = field(default_factory=dict)
    failure: str | None = None
    noise: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON row (every key of :data:`EVALUATION_KEYS`; absent components are null)."""
        return {
            "index": self.index,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "dse": self.dse,
            "dse_noise": self.noise,
            **{name: self.components.get(name) for name in COMPONENTS},
            "checkpoint": self.checkpoint,
            "seconds": self.seconds,
            "failure": self.failure,
        }

    @classmethod
    def from_dict(cls, row: Any, position: int = 0, where: str = "evaluation") -> Evaluation:
        """Parse one row strictly; errors name ``where`` and the field."""
        if not isinstance(row, Mapping):
            raise RunFormatError(f"{where} must be an object, got {type(row).__name__}")
        if "dse" not in row:
            raise RunFormatError(f"{where} has no 'dse'")

        def number(key: str, kind: type = float) -> Any:
            value = row.get(key)
            if value is None:
                return None
            if isinstance(value, bool):
                raise RunFormatError(f"{where}: {key!r} must be a number, got {value!r}")
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise RunFormatError(f"{where}: {key!r} must be a number, got {value!r}") from None

        def text(key: str) -> str | None:
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise RunFormatError(f"{where}: {key!r} must be a string or null, got {value!r}")
            return value

        dse = number("dse")
        index = number("index", int)
        noise = number("dse_noise")
        if noise is not None and not (math.isfinite(noise) and noise >= 0):
            raise RunFormatError(f"{where}: 'dse_noise' must be a finite number >= 0 or null, got {noise!r}")
        return cls(
            index=position if index is None else index,
            dse=math.nan if dse is None else dse,
            epoch=number("epoch", int),
            global_step=number("global_step", int),
            checkpoint=text("checkpoint"),
            seconds=number("seconds"),
            components={key: number(key) for key in COMPONENTS if row.get(key) is not None},
            failure=text("failure"),
            noise=noise,
        )


@dataclass(frozen=True)
class RunRecord:
    """A run's DSE history, wherever it came from (a file, an Optuna study, a Ray result).

    ``problem`` says why a run has no usable evaluations (an unreadable file, ...); such
    runs are reported, never selected. ``ranking_reliable`` / ``ranking_reason``: the
    per-run verdict of :mod:`dse_tune.reliability` on whether DSE ranks this run's
    checkpoints (None: not judged); False makes the choice keep the latest checkpoint.
    """

    name: str
    evaluations: tuple[Evaluation, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None
    stopped_early: bool = False
    stop_reason: str | None = None
    problem: str | None = None
    ranking_reliable: bool | None = None
    ranking_reason: str | None = None

    @property
    def beta(self) -> float | None:
        """``config["dse_beta"]``: the DSE regularization weight, None if not recorded."""
        value = self.config.get("dse_beta")
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        return None

    @property
    def dse(self) -> list[float]:
        """The DSE history in evaluation order."""
        return [evaluation.dse for evaluation in self.evaluations]

    @property
    def peak(self) -> Peak:
        """:func:`dse_tune.degradation.peak` of the history (NaN-safe, first of ties)."""
        return peak(self.dse)

    @property
    def dse_noise(self) -> list[float | None] | None:
        """The standard error of each DSE value, or None when no evaluation records one."""
        noise = [evaluation.noise for evaluation in self.evaluations]
        return None if all(n is None for n in noise) else noise

    first_untrained = property(
        lambda self: bool(self.evaluations) and is_untrained(self.evaluations[0]),
        doc="Whether the first evaluation scored the model before any optimizer step.",
    )

    @property
    def best(self) -> Evaluation | None:
        """The evaluation at the peak (the highest finite DSE), or None when none is finite."""
        found = self.peak
        return None if found.index is None else self.evaluations[found.index]

    @property
    def chosen(self) -> Evaluation | None:
        """The evaluation the run's decision keeps (:func:`dse_tune.decision.run_choice`
        with the default candidate rule: what ``dse-tune select`` keeps), or None."""
        position = run_choice(self).chosen
        return None if position is None else self.evaluations[position]

    def checkpoint_path(self, evaluation: Evaluation) -> Path | None:
        """Where ``evaluation``'s checkpoint lives (relative paths resolved on ``path``)."""
        if evaluation.checkpoint is None:
            return None
        checkpoint = Path(evaluation.checkpoint)
        if checkpoint.is_absolute() or self.path is None:
            return checkpoint
        return self.path / checkpoint

    def with_evaluation(self, evaluation: Evaluation) -> RunRecord:
        """A copy with ``evaluation`` appended and the ranking verdict judged again on the
        longer history (:func:`dse_tune.decision.ranking_verdict_of`)."""
        evaluations = (*self.evaluations, evaluation)
        verdict = ranking_verdict_of(evaluations)
        return dataclasses.replace(
            self, evaluations=evaluations, ranking_reliable=verdict.reliable, ranking_reason=verdict.reason
        )

    def stopped(self, reason: str | None) -> RunRecord:
        """A copy marked as stopped early for ``reason`` (None: not stopped)."""
        return dataclasses.replace(self, stopped_early=reason is not None, stop_reason=reason)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``dse_history.json``."""
        return {
            "format_version": FORMAT_VERSION,
            "config": dict(self.config),
            "evaluations": [evaluation.to_dict() for evaluation in self.evaluations],
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            **({"ranking_reliable": self.ranking_reliable, "ranking_reason": self.ranking_reason}
               if self.ranking_reliable is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, *, name: str, path: Path | None = None, source: str = HISTORY_FILE) -> RunRecord:
        """Parse the content of ``dse_history.json`` strictly; errors name ``source``."""
        if not isinstance(data, Mapping):
            raise RunFormatError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RunFormatError(f"{source}: 'format_version' must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise RunFormatError(
                f"{source}: format_version {version} is newer than this dse_tune reads ({FORMAT_VERSION}); upgrade dse_tune"
            )
        config = {} if data.get("config") is None else data["config"]
        if not isinstance(config, Mapping):
            raise RunFormatError(f"{source}: 'config' must be an object")
        rows = [] if data.get("evaluations") is None else data["evaluations"]
        if not isinstance(rows, list):
            raise RunFormatError(f"{source}: 'evaluations' must be a list")
        evaluations = [Evaluation.from_dict(row, i, f"{source}: evaluations[{i}]") for i, row in enumerate(rows)]
        evaluations.sort(key=lambda e: e.index)  # stable: equal indices keep file order
        stop_reason = data.get("stop_reason")
        reliable, ranking_reason = data.get("ranking_reliable"), data.get("ranking_reason")
        if reliable is not None and not isinstance(reliable, bool):
            raise RunFormatError(f"{source}: 'ranking_reliable' must be true, false or null, got {reliable!r}")
        return cls(
            name=name,
            evaluations=tuple(evaluations),
            config=dict(config),
            path=path,
            stopped_early=bool(data.get("stopped_early", False)),
            stop_reason=None if stop_reason is None else str(stop_reason),
            ranking_reliable=reliable,
            ranking_reason=None if ranking_reason is None else str(ranking_reason),
        )

    @classmethod
    def from_values(
        cls,
        name: str,
        values: Sequence[float | None],
        *,
        beta: float | None = None,
        epochs: Sequence[int] | None = None,
        checkpoints: Sequence[str | os.PathLike | None] | None = None,
        noise: Sequence[float | None] | None = None,
        global_steps: Sequence[int | None] | None = None,
        stopped_early: bool = False,
        **kwargs: Any,
    ) -> RunRecord:
        """A record from a bare DSE sequence (epochs default to the evaluation index).

        ``checkpoints`` gives each evaluation's checkpoint path (relative to ``path=``
        when that is given), so that selection can hand back a file; ``noise`` the
        standard error of each value; ``global_steps`` the optimizer steps (0: untrained).
        """
        series = [math.nan if v is None else float(v) for v in values]
        columns = {"epochs": range(len(series)) if epochs is None else epochs, "checkpoints": checkpoints,
                   "noise": noise, "global_steps": global_steps}
        columns = {k: [None] * len(series) if c is None else list(c) for k, c in columns.items()}
        for label, column in columns.items():
            if len(column) != len(series):
                raise ValueError(f"{label} has {len(column)} entries but values has {len(series)}")
        evaluations = tuple(
            Evaluation(i, v, epoch=e, checkpoint=None if c is None else os.fspath(c), noise=n, global_step=g)
            for i, (v, e, c, n, g) in enumerate(zip(series, *columns.values(), strict=True))
        )
        config = dict(kwargs.pop("config", {}))
        if beta is not None:
            config["dse_beta"] = beta
        path = kwargs.pop("path", None)
        return cls(
            name, evaluations, config, path=None if path is None else Path(path), stopped_early=stopped_early, **kwargs
        )


# --------------------------------------------------------------------------- files


def history_file(run_dir: str | os.PathLike) -> Path:
    """``RUN_DIR/dse_history.json`` (a path to the file itself is returned unchanged)."""
    path = Path(run_dir)
    return path if path.suffix == ".json" and not path.is_dir() else path / HISTORY_FILE


def read_run(run_dir: str | os.PathLike, name: str | None = None) -> RunRecord:
    """Read a run folder (or its ``dse_history.json``) strictly: errors as
    :func:`read_json_object`'s, and :class:`RunFormatError` naming file and field."""
    source = history_file(run_dir)
    data = read_json_object(source)
    return RunRecord.from_dict(data, name=name or source.parent.resolve().name, path=source.parent, source=str(source))


def read_json_file(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``, every error naming the file: ``FileNotFoundError`` when
    it cannot be read, :class:`RunFormatError` when it is not JSON."""
    source = Path(path)
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except OSError as error:
        raise FileNotFoundError(f"cannot read {source}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise RunFormatError(f"{source}: not valid JSON ({error})") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """:func:`read_json_file` of a file that must hold a JSON object (else :class:`RunFormatError`)."""
    source = Path(path)
    data = read_json_file(source)
    if not isinstance(data, dict):
        raise RunFormatError(f"{source}: expected a JSON object, got {type(data).__name__}")
    return data


def write_run(run_dir: str | os.PathLike, run: RunRecord) -> Path:
    """Write ``dse_history.json`` and ``dse_history.csv`` atomically; returns the JSON path.
    Non-finite values are written as ``NaN`` (Python's ``json`` reads them back)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = atomic_write_text(folder / HISTORY_FILE, json.dumps(run.to_dict(), indent=2) + "\n")
    atomic_write_text(folder / HISTORY_CSV, history_to_csv(run.evaluations))
    return target


def history_to_csv(evaluations: Sequence[Evaluation | Mapping[str, Any]]) -> str:
    """The evaluations as CSV text, one column per :data:`EVALUATION_KEYS` entry."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(EVALUATION_KEYS), lineterminator="\n")
    writer.writeheader()
    for evaluation in evaluations:
        row = evaluation.to_dict() if isinstance(evaluation, Evaluation) else evaluation
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in EVALUATION_KEYS})
    return buffer.getvalue()


def mark_stopped(run_dir: str | os.PathLike, reason: str) -> RunRecord:
    """Record in the run's history that it was stopped early, and why (atomic rewrite), for
    stoppers outside the training process (a Ray Tune stopper). Returns the updated record."""
    run = read_run(run_dir)
    if run.stopped_early and run.stop_reason:
        return run  # the first reason stands (the training process may have written it)
    updated = run.stopped(reason)
    write_run(run.path, updated)
    return updated


def write_config(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``RUN_DIR/config.json`` atomically."""
    return atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(dict(config), indent=2) + "\n")


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's settings: ``config.json`` if present, else the history's copy, else ``{}``."""
    folder = Path(run_dir)
    if (folder / CONFIG_FILE).is_file():
        return read_json_object(folder / CONFIG_FILE)
    if history_file(folder).is_file():
        return dict(read_run(folder).config)
    return {}


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Every run folder at or below ``root`` (a folder holding ``dse_history.json``), sorted;
    not inside a run (copies of the history in its checkpoint folders are not runs)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        if HISTORY_FILE in files:
            subdirectories.clear()
            found.append(Path(directory))
    return sorted(found)


def load_sweep(root: str | os.PathLike, strict: bool = False) -> list[RunRecord]:
    """Every run at or below ``root`` (a run folder or a sweep of them), sorted by name: its
    path relative to ``root`` (a single run: the folder's own name). An unreadable history
    raises with ``strict``, else becomes an empty run whose ``problem`` says why."""
    root = Path(root)
    runs = []
    for run_dir in find_runs(root):
        relative = run_dir.relative_to(root).as_posix()
        name = root.resolve().name if relative == "." else relative
        try:
            runs.append(read_run(run_dir, name=name))
        except (OSError, ValueError) as error:
            if strict:
                raise
            runs.append(RunRecord(name=name, path=run_dir, problem=str(error)))
    return sorted(runs, key=lambda run: run.name)


def relative_path(path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """``path`` as a file in ``folder`` records it: relative to ``folder`` (``..`` allowed),
    or absolute where no relative path exists (another drive on Windows)."""
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:
        return str(Path(path).absolute())


def is_sweep(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a Ray Tune sweep (its state file), so it can be resumed."""
    return (Path(folder) / TUNER_STATE_FILE).is_file()
