"""Held-out rescoring: one fair score for every candidate checkpoint of a sweep.

A run with ``dse_beta > 0`` adds ``-beta * DSE`` to its loss: it optimizes DSE on its
own training images, its monitoring probe set included. Its monitored DSE is therefore
not comparable with a ``beta = 0`` run's, and the raw comparison favours the largest
beta (``docs/selection.md``). Rescoring scores every candidate checkpoint of every run
again, identically: on the same **held-out set** (:mod:`dse_tune.evaluation.held_out`:
images in no run's monitoring probe set), in the same order, with the same DSE settings
and seed. The result is the ``rescored`` argument of
:func:`dse_tune.selection.select_best` and the ``rescored.json`` file that
:func:`load_rescored` (``dse-tune select --rescored FILE``) reads.

Steps: load the runs (:func:`dse_tune.runs.load_sweep`) -> build the held-out set ->
score each checkpoint (:func:`rescore_runs`; DSE through the tolerant
:func:`dse_tune.score_tokens`, optionally RankMe and alpha-ReQ: independent label-free
scores, which a beta > 0 run did not optimize) -> write (:func:`write_rescored`).

Files written next to each other (``out``, default ``ROOT/rescored.json``)::

    rescored.json        [{"checkpoint": "trial_0001/checkpoints/epoch=0004.ckpt",
                           "dse": 1.23, "run": "trial_0001", "evaluation": 4, "epoch": 4,
                           "monitored_dse": 1.31, "inter": ..., "intra_image": ...,
                           "intra_batch": ..., "dim": ..., "rankme": ..., "alpha_req": ...,
                           "alpha_req_r2": ..., "probe": "sha256:...", "seed": 0,
                           "problem": null}, ...]
    rescored_probe.json  the held-out set (source, indices, fingerprint), what it was
                         checked against, and the settings

(``"probe"`` holds the held-out set's fingerprint; it and the second file keep their
names from before the held-out set was called so, for the scripts that read them.)
Checkpoint paths are relative to the file's folder (absolute when on another drive);
a candidate that could not be scored has ``"dse": null`` and a ``problem``.

Usage (it needs real checkpoints, so it is no doctest)::

    rescored = rescore_sweep("runs/sweep", data="../shared/data/camvid", splits=["val"])
    best = select_best(load_sweep("runs/sweep"), rescored=rescored).best_checkpoint

Importing this module loads no torch (``dse-tune select --rescored`` only reads JSON);
scoring needs torch and the SSL package, never Lightning's Trainer, Optuna or Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.degradation import finite_or_none
from dse_tune.atomic import atomic_write_json
from dse_tune.evaluation.held_out import HeldOutSet, held_out_set_for
from dse_tune.runs import COMPONENTS, Evaluation, RunRecord, load_sweep, relative_path
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
#: The held-out set's description, next to ``rescored.json``. The name predates the
#: term "held-out set" and is kept so that existing scripts still find the file.
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


# --------------------------------------------------------------------------- score


def _check_scores(scores: Iterable[str]) -> None:
    unknown = sorted(set(scores) - set(SCORES))
    if unknown:
        raise ValueError(f"scores: unknown score(s) {unknown}; known: {SCORES}")


def score_held_out_tokens(
    tokens: Tensor, *, seed: int = 0, scores: Sequence[str] = ("dse",), dse_kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The scores of dense tokens (B, N, d), never raising for a sick model.

    DSE goes through :func:`dse_tune.score_tokens` (NaN/Inf or collapsed features give
    None and the reason); RankMe and alpha-ReQ, when asked for, likewise give None and
    the reason. Returns ``{"dse", "inter", "intra_image", "intra_batch", "dim",
    ["rankme"], ["alpha_req", "alpha_req_r2"], "problem"}``.

    Example:
        >>> import torch
        >>> row = score_held_out_tokens(torch.ones(16, 16, 8), scores=("dse", "rankme"))
        >>> row["dse"], row["problem"].startswith("DSE: collapsed features")
        (None, True)
    """
    from dse_tune.metrics import alpha_req, rankme, score_tokens

    _check_scores(scores)
    result: dict[str, Any] = {"dse": None, **dict.fromkeys(COMPONENTS), "problem": None}
    problems = []
    try:
        dse_score = score_tokens(tokens, seed=seed, **dict(dse_kwargs or {}))
        if dse_score.ok:
            result["dse"] = finite_or_none(dse_score.score)
            result.update({name: finite_or_none(getattr(dse_score, name)) for name in COMPONENTS})
        else:
            problems.append(f"DSE: {dse_score.failure}")
    except ValueError as error:  # a setup error (too few images): this score only
        problems.append(f"DSE: {error}")
    if "rankme" in scores:
        try:
            result["rankme"] = finite_or_none(rankme(tokens))
        except ValueError as error:
            result["rankme"] = None
            problems.append(f"RankMe: {error}")
    if "alpha_req" in scores:
        try:
            fit = alpha_req(tokens)
            result["alpha_req"], result["alpha_req_r2"] = finite_or_none(fit.alpha), finite_or_none(fit.r2)
        except ValueError as error:
            result["alpha_req"] = result["alpha_req_r2"] = None
            problems.append(f"alpha-ReQ: {error}")
    result["problem"] = "; ".join(problems) or None
    return result


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
    """Scores of one checkpoint's dense tokens on the held-out images.

    Returns :func:`score_held_out_tokens`' dict; a score that cannot be computed
    (non-finite features, collapsed features, too few tokens) is None with the reason
    in ``problem``. A checkpoint that cannot be loaded raises.

    Args:
        held_out: the :class:`~dse_tune.evaluation.held_out.HeldOutSet`, or its images.
        loader: ``path -> model`` (anything :func:`dse_tune.features.dense_tokens`
            reads); default :func:`dse_tune.checkpoints.tracked_run.checkpoint_loader` of
            the checkpoint's run folder (a tracked run's own reader, else
            :func:`dse_tune.ssl.methods.load_checkpoint`).
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
    from dse_tune.features import dense_tokens_batched

    images = held_out.images if isinstance(held_out, HeldOutSet) else held_out
    tokens = dense_tokens_batched(model, images.to(device), batch_size=batch_size).float().cpu()
    return score_held_out_tokens(tokens, **options)


def _checkpoints_to_rescore(
    runs: Iterable[RunRecord], which: str, window: int, top: int | None
) -> list[tuple[RunRecord, Evaluation, Path]]:
    """(run, evaluation, checkpoint) of the candidates (or of every evaluation) with a checkpoint."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    jobs = []
    for run in runs:
        if which == "candidates":
            positions = select_run(run, window=window, top=top).candidates
        else:
            positions = range(len(run.evaluations))
        for position in positions:
            evaluation = run.evaluations[position]
            checkpoint = run.checkpoint_path(evaluation)
            if checkpoint is not None:
                jobs.append((run, evaluation, checkpoint))
    return jobs


def _run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder holding ``checkpoint`` (the nearest parent with a DSE history)."""
    from dse_tune.runs import history_file

    for folder in checkpoint.resolve().parents:
        if history_file(folder).is_file():
            return folder
    return None


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
    (``which="all"``) of each run on ``held_out``, with a progress bar.

    A checkpoint that is missing or cannot be loaded gives a row with ``dse=None`` and
    the reason in ``problem``; the others go on.
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
    mapping = {}
    for row in rows:
        value = row.score(score)
        if value is not None:
            mapping[str(row.checkpoint)] = value
    return mapping


# --------------------------------------------------------------------------- files


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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise FileNotFoundError(f"cannot read {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
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
    values = {}
    for checkpoint, value in pairs:
        number = finite_or_none(value)
        if number is not None:
            values[str(path.parent / checkpoint)] = number
    return values


# --------------------------------------------------------------------------- sweep


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
    """Rescore every run below ``root`` on one held-out set; write and return the result.

    Args:
        root: A sweep folder (or one run folder), as :func:`dse_tune.runs.load_sweep`
            reads it.
        data, splits: Where the held-out images come from (see
            :func:`~dse_tune.evaluation.held_out.held_out_set_for`; None: the runs'
            common training data minus every monitoring probe image).
        held_out_size: Number of held-out images.
        image_size: Their size: ``N``, ``(H, W)``/``"HxW"`` or ``"native"`` (default: the
            runs' common probe image size, ``probe_image_size`` else ``image_size``).
        seed: Seed of DSE's k-means and shuffle, the same for every checkpoint.
        scores: ``"dse"`` plus optionally ``"rankme"``, ``"alpha_req"``.
        select_by: The value returned per checkpoint: ``"dse"`` or ``"rankme"``.
            (``rescored.json`` always holds the held-out DSE under ``"dse"``.)
        window, top, which: Which checkpoints (the selector's candidates by default;
            use the same ``window``/``top`` as in selection).
        dse_kwargs: More :func:`dse_tune.dse` settings (the same for every checkpoint).
        batch_size, device: Feature extraction.
        out: The rows' file (default ``ROOT/rescored.json``); ``rescored_probe.json``
            goes next to it.
        progress: Show a progress bar over checkpoints.

    Returns:
        ``{checkpoint path: held-out value}`` for every candidate that could be scored:
        pass it as ``select_best(runs, rescored=...)``.

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
