"""Held-out rescoring: one fair score for every candidate checkpoint of a sweep.

A run with ``dse_beta > 0`` optimizes DSE on its own training images, its monitoring
probe set included, so its monitored DSE is not comparable with a ``beta = 0`` run's
(``docs/selection.md``). Rescoring scores every candidate checkpoint of every run again,
identically: on one **held-out set** (:mod:`dse_tune.evaluation.held_out`: images in no
run's probe set), with the same DSE settings and seed. The result is the ``rescored``
argument of :func:`dse_tune.selection.select_best` and the ``rescored.json`` file that
:func:`load_rescored` (``dse-tune select --rescored FILE``) reads.

Steps: :func:`dse_tune.runs.load_sweep` -> :func:`~dse_tune.evaluation.held_out.held_out_set_for`
-> :func:`rescore_runs` (DSE through the tolerant :func:`dse_tune.score_tokens`, optionally
RankMe and alpha-ReQ: scores a beta > 0 run did not optimize) -> :func:`write_rescored`:
``rescored.json`` (one row per checkpoint; ``"dse": null`` and a ``problem`` where it
could not be scored) and ``rescored_probe.json`` (the held-out set and the settings).
Their fields: ``docs/selection.md``, section 5. (``"probe"`` and ``rescored_probe.json``
keep their names from before "held-out set", for the scripts that read them.)

Usage (it needs real checkpoints, so it is no doctest)::

    rescored = rescore_sweep("runs/sweep", data="../shared/data/camvid", splits=["val"])
    best = select_best(load_sweep("runs/sweep"), rescored=rescored).best_checkpoint

Importing this module loads no torch (``dse-tune select --rescored`` only reads JSON).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse_tune.atomic import atomic_write_json
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.degradation import finite_or_none
from dse_tune.evaluation.held_out import HeldOutSet, held_out_set_for
from dse_tune.runs import (
    COMPONENTS, Evaluation, RunRecord, history_file, load_sweep, read_json_file, relative_path,
)
from dse_tune.selection import select_run

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "HELD_OUT_SET_FILE",
    "RESCORED_FILE",
    "SCORES",
    "SELECTION_SCORES",
    "RescoredCheckpoint",
    "load_rescored",
    "rescore_checkpoint",
    "rescore_runs",
    "rescore_sweep",
    "rescored_mapping",
    "score_held_out_tokens",
    "write_rescored",
]

RESCORED_FILE = "rescored.json"
#: The held-out set's description, next to ``rescored.json`` (the name predates the term).
HELD_OUT_SET_FILE = "rescored_probe.json"
#: Scores that can be computed; ``"dse"`` always is.
SCORES = ("dse", "rankme", "alpha_req")
#: Scores usable as the selection value (higher is better). alpha-ReQ is not one: its
#: best value is near 1, not at an extreme.
SELECTION_SCORES = ("dse", "rankme")
WHICH = ("candidates", "all")


@dataclass(frozen=True)
class RescoredCheckpoint:
    """The held-out scores of one checkpoint (None where not computed or not finite)."""

    run: str
    evaluation: int
    epoch: int | None
    checkpoint: Path
    monitored_dse: float | None
    dse: float | None = None
    components: Mapping[str, float] = field(default_factory=dict)
    rankme: float | None = None
    alpha_req: float | None = None
    alpha_req_r2: float | None = None
    problem: str | None = None
    seconds: float = 0.0

    def score(self, name: str = "dse") -> float | None:
        if name not in SELECTION_SCORES:
            raise ValueError(f"score must be one of {SELECTION_SCORES}, got {name!r}")
        return getattr(self, name)


def _check_scores(scores: Iterable[str]) -> None:
    unknown = sorted(set(scores) - set(SCORES))
    if unknown:
        raise ValueError(f"scores: unknown score(s) {unknown}; known: {SCORES}")


def score_held_out_tokens(
    tokens: Tensor, *, seed: int = 0, scores: Sequence[str] = ("dse",), dse_kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The scores of dense tokens (B, N, d), never raising for a sick model: a score that
    cannot be computed (NaN/Inf, collapsed features, too few images) is None and
    ``problem`` says why. Returns ``{"dse", "inter", "intra_image", "intra_batch", "dim",
    ["rankme"], ["alpha_req", "alpha_req_r2"], "problem"}``.

    Example:
        >>> import torch
        >>> row = score_held_out_tokens(torch.ones(16, 16, 8), scores=("dse", "rankme"))
        >>> row["dse"], row["problem"].startswith("DSE: collapsed features")
        (None, True)
    """
    from dse_tune.metrics import alpha_req, rankme

    _check_scores(scores)
    problems: list[str] = []
    dse_score = tolerant_dse(problems, tokens, seed=seed, **dict(dse_kwargs or {}))
    result: dict[str, Any] = dict.fromkeys(("dse", *COMPONENTS))
    if dse_score is not None:
        result["dse"] = finite_or_none(dse_score.score)
        result.update({name: finite_or_none(getattr(dse_score, name)) for name in COMPONENTS})
    if "rankme" in scores:
        result["rankme"] = finite_or_none(attempt_score(problems, "RankMe", lambda: rankme(tokens)))
    if "alpha_req" in scores:
        fit = attempt_score(problems, "alpha-ReQ", lambda: alpha_req(tokens))
        result["alpha_req"] = None if fit is None else finite_or_none(fit.alpha)
        result["alpha_req_r2"] = None if fit is None else finite_or_none(fit.r2)
    result["problem"] = "; ".join(problems) or None
    return result


def attempt_score(problems: list[str], label: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, or None with ``"label: error"`` added to ``problems`` when it raises
    ValueError (these tokens cannot give this score; the other scores go on)."""
    try:
        return compute()
    except ValueError as error:
        problems.append(f"{label}: {error}")
        return None


def tolerant_dse(problems: list[str], tokens: Tensor, **dse_kwargs: Any) -> Any:
    """:func:`dse_tune.score_tokens` of ``tokens`` when it could score them, else None with
    the reason (NaN/Inf, collapsed features, too few images) added to ``problems``."""
    from dse_tune.metrics import score_tokens

    dse_score = attempt_score(problems, "DSE", lambda: score_tokens(tokens, **dse_kwargs))
    if dse_score is not None and not dse_score.ok:
        problems.append(f"DSE: {dse_score.failure}")
        return None
    return dse_score


def rescore_checkpoint(
    checkpoint: str | os.PathLike,
    held_out: HeldOutSet | Tensor,
    *,
    seed: int = 0,
    scores: Sequence[str] = ("dse",),
    dse_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: Any = "cpu",
    loader: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """:func:`score_held_out_tokens` of one checkpoint's dense tokens on ``held_out`` (a
    :class:`~dse_tune.evaluation.held_out.HeldOutSet` or its images). A checkpoint that
    cannot be loaded raises.

    ``loader``: ``path -> model`` (anything :func:`dse_tune.features.dense_tokens` reads);
    default :func:`dse_tune.checkpoints.tracked_run.checkpoint_loader` of its run folder.
    """
    import torch

    _check_scores(scores)
    path = Path(checkpoint)
    if loader is None:
        from dse_tune.checkpoints.tracked_run import checkpoint_loader

        model = checkpoint_loader(_run_folder_of(path))(path, map_location=device)
    else:
        model = loader(path)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return _score_model(model, held_out, seed=seed, scores=scores, dse_kwargs=dse_kwargs, batch_size=batch_size,
                        device=device)


def _score_model(model: Any, held_out: HeldOutSet | Tensor, *, batch_size: int, device: Any, **options: Any) -> dict:
    """:func:`score_held_out_tokens` of ``model``'s dense tokens on the held-out images."""
    from dse_tune.evaluation.linear_probe import frozen_tokens

    images = held_out.images if isinstance(held_out, HeldOutSet) else held_out
    return score_held_out_tokens(frozen_tokens(model, (images,), device, batch_size)[0], **options)


def _checkpoints_to_rescore(
    runs: Iterable[RunRecord], which: str, window: int, top: int | None
) -> list[tuple[RunRecord, Evaluation, Path]]:
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if which == "candidates":
        return checkpoint_jobs(runs, lambda run: select_run(run, window=window, top=top).candidates)
    return checkpoint_jobs(runs, lambda run: range(len(run.evaluations)))


def checkpoint_jobs(
    runs: Iterable[RunRecord], positions: Callable[[RunRecord], Iterable[int | None]]
) -> list[tuple[RunRecord, Evaluation, Path]]:
    """``(run, evaluation, checkpoint)`` at ``positions(run)`` of every run where a checkpoint
    is on record: the jobs of :func:`dse_tune.checkpoints.tracked_run.score_checkpoints`."""
    return [(run, run.evaluations[p], checkpoint) for run in runs for p in dict.fromkeys(positions(run))
            if p is not None and (checkpoint := run.checkpoint_path(run.evaluations[p])) is not None]


def _run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder holding ``checkpoint`` (the nearest parent with a DSE history)."""
    return next((folder for folder in checkpoint.resolve().parents if history_file(folder).is_file()), None)


def _row(result: Any) -> RescoredCheckpoint:
    """One row; a missing or unloadable checkpoint gives ``dse=None`` and the reason."""
    evaluation, values = result.evaluation, result.value
    common = dict(run=result.run.name, evaluation=evaluation.index, epoch=evaluation.epoch,
                  checkpoint=result.checkpoint, monitored_dse=finite_or_none(evaluation.dse))
    if values is None:
        return RescoredCheckpoint(**common, problem=result.problem)
    return RescoredCheckpoint(
        **common,
        dse=values["dse"],
        components={name: values[name] for name in COMPONENTS if values[name] is not None},
        rankme=values.get("rankme"),
        alpha_req=values.get("alpha_req"),
        alpha_req_r2=values.get("alpha_req_r2"),
        problem=values["problem"],
        seconds=result.seconds,
    )


def rescore_runs(
    runs: Iterable[RunRecord],
    held_out: HeldOutSet,
    *,
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    which: str = "candidates",
    seed: int = 0,
    scores: Sequence[str] = ("dse",),
    dse_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: Any = "cpu",
    loader: Callable[[Path], Any] | None = None,
    progress: bool = True,
) -> list[RescoredCheckpoint]:
    """Rescore the candidate checkpoints (``which="candidates"``, the selector's
    :func:`~dse_tune.selection.select_run` with ``window``/``top``) or every checkpoint
    (``which="all"``) of each run on ``held_out``, with a progress bar. A checkpoint that
    cannot be loaded gives a row with ``dse=None`` and the reason in ``problem``.
    """
    from dse_tune.checkpoints.tracked_run import score_checkpoints

    _check_scores(scores)

    def score(model: Any, run: RunRecord) -> dict[str, Any]:
        return _score_model(model, held_out, seed=seed, scores=scores, dse_kwargs=dse_kwargs, batch_size=batch_size,
                            device=device)

    jobs = _checkpoints_to_rescore(runs, which, window, top)
    load = None if loader is None else (lambda path, map_location: loader(Path(path)))  # default: the run's reader
    results = score_checkpoints(jobs, score, desc="rescoring", progress=progress, device=device, load=load)
    return [_row(result) for result in results]


def rescored_mapping(rows: Iterable[RescoredCheckpoint], score: str = "dse") -> dict[str, float]:
    """``{checkpoint path: value}`` of the rows with a finite ``score``: the ``rescored``
    argument of :func:`dse_tune.selection.select_best` (``"dse"`` or ``"rankme"``)."""
    if score not in SELECTION_SCORES:
        raise ValueError(f"score must be one of {SELECTION_SCORES} (higher is better), got {score!r}")
    return {str(row.checkpoint): value for row in rows if (value := row.score(score)) is not None}


def _held_out_set_file(path: Path) -> Path:
    return path.with_name(HELD_OUT_SET_FILE if path.name == RESCORED_FILE else f"{path.stem}_probe.json")


def write_rescored(
    rows: Sequence[RescoredCheckpoint],
    held_out: HeldOutSet,
    path: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``rescored.json`` (the rows) and ``rescored_probe.json`` (the held-out set
    and ``settings``) into ``path``'s folder, atomically. Returns the rows' file."""
    path = Path(path)
    folder = path.parent
    records = [
        {
            "checkpoint": relative_path(row.checkpoint, folder),
            "dse": row.dse,
            "run": row.run,
            "evaluation": row.evaluation,
            "epoch": row.epoch,
            "monitored_dse": row.monitored_dse,
            **{name: row.components.get(name) for name in COMPONENTS},
            "rankme": row.rankme,
            "alpha_req": row.alpha_req,
            "alpha_req_r2": row.alpha_req_r2,
            "probe": held_out.fingerprint,
            "seed": (settings or {}).get("seed"),
            "seconds": round(row.seconds, 3),
            "problem": row.problem,
        }
        for row in rows
    ]
    description = {"held_out_probe": held_out.describe(), "settings": dict(settings or {})}
    atomic_write_json(path, records, allow_nan=False)
    atomic_write_json(_held_out_set_file(path), description, allow_nan=False)
    return path


def load_rescored(path: str | os.PathLike) -> dict[str, float]:
    """Read rescored candidate values: ``{checkpoint: value}`` or ``[{checkpoint, dse}]``.

    Relative checkpoint paths are taken relative to the file's directory; null and
    non-finite values are left out. The result is a valid ``rescored`` argument of
    :func:`dse_tune.selection.select_best`.

    Example:
        >>> import json, pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp(), "rescored.json")
        >>> _ = path.write_text(json.dumps([{"checkpoint": "a.ckpt", "dse": 0.5}, {"checkpoint": "b.ckpt", "dse": None}]))
        >>> {pathlib.Path(k).name: v for k, v in load_rescored(path).items()}
        {'a.ckpt': 0.5}
    """
    path = Path(path)
    data = read_json_file(path)  # a file it cannot read or parse: an error naming it
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list):
        pairs = []
        for i, row in enumerate(data):
            if not isinstance(row, dict) or "checkpoint" not in row or "dse" not in row:
                raise ValueError(f"{path}: entry {i} needs 'checkpoint' and 'dse'")
            pairs.append((row["checkpoint"], row["dse"]))
    else:
        raise ValueError(f"{path}: expected an object or a list")
    return {str(path.parent / checkpoint): number for checkpoint, value in pairs
            if (number := finite_or_none(value)) is not None}


def _wanted_scores(scores: Sequence[str], select_by: str) -> tuple[str, ...]:
    if select_by not in SELECTION_SCORES:
        raise ValueError(f"select_by must be one of {SELECTION_SCORES} (higher is better), got {select_by!r}")
    wanted = tuple(dict.fromkeys(("dse", *scores, select_by)))
    _check_scores(wanted)
    return wanted


def rescore_sweep(
    root: str | os.PathLike,
    data: Any = None,
    *,
    splits: str | Sequence[str] | None = None,
    held_out_size: int = 64,
    image_size: Any = None,
    seed: int = 0,
    scores: Sequence[str] = ("dse",),
    select_by: str = "dse",
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    which: str = "candidates",
    dse_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: Any = "cpu",
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Rescore every run below ``root`` (a sweep or run folder) on one held-out set;
    write ``rescored.json`` and ``rescored_probe.json``, and return
    ``{checkpoint path: held-out value}`` of every checkpoint that could be scored (the
    ``rescored`` argument of :func:`dse_tune.selection.select_best`).

    Args:
        data, splits: Where the held-out images come from (see
            :func:`~dse_tune.evaluation.held_out.held_out_set_for`; None: the runs'
            common training data minus every monitoring probe image).
        image_size: ``N``, ``(H, W)``/``"HxW"`` or ``"native"`` (default: the runs'
            common probe image size, ``probe_image_size`` else ``image_size``).
        seed: Seed of DSE's k-means and shuffle, the same for every checkpoint.
        scores: ``"dse"`` plus optionally ``"rankme"``, ``"alpha_req"``.
        select_by: The value returned per checkpoint: ``"dse"`` or ``"rankme"``
            (``rescored.json`` always holds the held-out DSE under ``"dse"``).
        window, top, which: Which checkpoints (the selector's candidates by default;
            use the same ``window``/``top`` as in selection).
        dse_kwargs: More :func:`dse_tune.dse` settings (the same for every checkpoint).
        out: The rows' file (default ``ROOT/rescored.json``).

    Raises:
        ValueError: No run, no held-out image, or no checkpoint could be scored (the
            message gives the first reason).
    """
    root = Path(root)
    wanted = _wanted_scores(scores, select_by)
    runs = [run for run in load_sweep(root) if run.evaluations]
    if not runs:
        raise ValueError(f"no run with DSE evaluations below {root}")
    held_out = held_out_set_for(runs, data, splits=splits, size=held_out_size, image_size=image_size)
    rows = rescore_runs(
        runs, held_out, window=window, top=top, which=which, seed=seed, scores=wanted,
        dse_kwargs=dse_kwargs, batch_size=batch_size, device=device, progress=progress,
    )
    if not rows:
        raise ValueError(f"the runs below {root} have no checkpoint to rescore")
    settings = dict(seed=seed, scores=list(wanted), select_by=select_by, dse_kwargs=dict(dse_kwargs or {}),
                    window=window, top=top, which=which)
    write_rescored(rows, held_out, root / RESCORED_FILE if out is None else Path(out), settings)
    mapping = rescored_mapping(rows, select_by)
    if not mapping:
        reasons = [row.problem for row in rows if row.problem] or ["unknown"]
        raise ValueError(f"no checkpoint below {root} could be rescored; first reason: {reasons[0]}")
    return mapping
