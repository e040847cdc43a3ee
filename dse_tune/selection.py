"""Label-free selection: candidate checkpoints per run, then the best run and beta.

Pure Python (standard library only). The data model (:class:`~dse_tune.runs.RunRecord`)
does not care where histories come from: :func:`dse_tune.runs.load_sweep` reads run
folders, and any other source (an Optuna study, a Ray result grid) only has to build
``RunRecord`` objects. The plot is :func:`dse_tune.plotting.plot_selection`.

Within a run (the paper's protocol): the candidates are the local maxima of the run's
DSE curve within +-``window`` evaluations, the ``top`` highest of them; the chosen
checkpoint is the best candidate.

Across runs, raw DSE is not a fair judge when the runs differ in ``beta``: ``beta > 0``
adds ``-beta * DSE`` to the loss, so those runs optimize the very score they would be
compared on. :func:`select_best` therefore compares runs by one of (see
``docs/selection.md``):

``"rescored"``
    A score computed the same way for every run's candidates (DSE on the same held-out
    probe images, estimator settings and seed), supplied by the caller.
``"conservative"`` (the default without rescoring)
    The monitored DSE, but only among the runs with the smallest beta: a larger beta is
    never credited with DSE it may have bought. With a single beta in the sweep this is
    the plain comparison.
``"raw"``
    The monitored DSE over all runs, knowingly biased toward large beta.

Example:
    >>> candidate_indices([0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.35, 0.6], window=2, top=3)
    [4, 7, 1]
    >>> runs = [
    ...     RunRecord.from_values("beta=0", [0.1, 0.4, 0.6, 0.5, 0.3], beta=0.0),
    ...     RunRecord.from_values("beta=1", [0.2, 0.7, 0.9, 0.8, 0.8], beta=1.0),
    ... ]
    >>> select_best(runs, compare="raw").best.name  # beta=1 optimized DSE itself
    'beta=1'
    >>> result = select_best(runs)  # no rescoring: beta=1 is not credited
    >>> result.best.name, result.best_epoch, result.best_beta
    ('beta=0', 2, 0.0)
    >>> held_out = {("beta=0", 2): 0.55, ("beta=1", 2): 0.41}
    >>> rescored = select_best(runs, rescored=lambda run, ev: held_out.get((run.name, ev.index)))
    >>> rescored.best.name, rescored.compare
    ('beta=0', 'rescored')
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse_tune.atomic import atomic_write_text
from dse_tune.degradation import finite_or_none
from dse_tune.runs import SELECTION_FILE, Evaluation, RunRecord

__all__ = [
    "COMPARE_MODES",
    "Rescored",
    "RunSelection",
    "SelectionResult",
    "candidate_indices",
    "select_best",
    "select_run",
    "selection_to_dict",
    "write_selection",
]

COMPARE_MODES = ("auto", "rescored", "conservative", "raw")


# --------------------------------------------------------------------------- candidates


def candidate_indices(values: Sequence[float], window: int = 2, top: int | None = 3) -> list[int]:
    """Indices of the local maxima of ``values``, best first: the paper's candidate set.

    ``i`` is a candidate when ``values[i]`` is the maximum of
    ``values[i - window : i + window + 1]`` (the window clipped at both ends; equal values
    all count as maxima). Candidates are sorted by value, highest first, ties by earlier
    index, and the first ``top`` are returned (all of them when ``top`` is None).
    Non-finite values (NaN, +-inf, None) are never candidates and are ignored as
    neighbours.

    Example:
        >>> candidate_indices([1.0, 3.0, 2.0, 2.5, 2.0, 1.0, 3.0], window=1, top=None)
        [1, 6, 3]
        >>> candidate_indices([float("nan"), 1.0, 1.0], window=2)
        [1, 2]
    """
    _check_int("window", window, minimum=0)
    if top is not None:
        _check_int("top", top, minimum=1, extra="or None")
    series = _as_floats(values, "values")
    found = []
    for i, value in enumerate(series):
        if not math.isfinite(value):
            continue
        neighbours = series[max(0, i - window) : i + window + 1]
        if all(not math.isfinite(other) or other <= value for other in neighbours):
            found.append(i)
    found.sort(key=lambda i: (-series[i], i))
    return found if top is None else found[:top]


# --------------------------------------------------------------------------- data model


#: Held-out scores for candidates: a mapping from checkpoint path to value, or a
#: callable ``(run, evaluation) -> value or None``. None/non-finite means "not rescored".
Rescored = Mapping[str | os.PathLike, float] | Callable[[RunRecord, Evaluation], Any]


@dataclass(frozen=True)
class RunSelection:
    """The candidates and the chosen checkpoint of one run.

    ``candidates`` and ``chosen`` are positions in ``run.evaluations``; ``rescored``
    maps candidate positions to their rescored value, for those that have one.
    """

    run: RunRecord
    candidates: tuple[int, ...] = ()
    chosen: int | None = None
    rescored: Mapping[int, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def beta(self) -> float | None:
        return self.run.beta

    @property
    def evaluations(self) -> int:
        return len(self.run.evaluations)

    @property
    def stopped_early(self) -> bool:
        return self.run.stopped_early

    @property
    def chosen_evaluation(self) -> Evaluation | None:
        return None if self.chosen is None else self.run.evaluations[self.chosen]

    @property
    def chosen_index(self) -> int | None:
        evaluation = self.chosen_evaluation
        return None if evaluation is None else evaluation.index

    @property
    def chosen_epoch(self) -> int | None:
        evaluation = self.chosen_evaluation
        return None if evaluation is None else evaluation.epoch

    @property
    def chosen_dse(self) -> float | None:
        evaluation = self.chosen_evaluation
        return None if evaluation is None else evaluation.dse

    @property
    def chosen_rescored(self) -> float | None:
        return None if self.chosen is None else self.rescored.get(self.chosen)

    @property
    def chosen_checkpoint(self) -> Path | None:
        evaluation = self.chosen_evaluation
        return None if evaluation is None else self.run.checkpoint_path(evaluation)

    @property
    def candidate_epochs(self) -> list[int | None]:
        return [self.run.evaluations[i].epoch for i in self.candidates]


@dataclass(frozen=True)
class SelectionResult:
    """Every run's selection, the winner (None if no run has a candidate) and the rule."""

    trials: tuple[RunSelection, ...]
    best: RunSelection | None
    compare: str
    rule: str
    window: int = 2
    top: int | None = 3
    warnings: tuple[str, ...] = ()

    @property
    def best_checkpoint(self) -> Path | None:
        return None if self.best is None else self.best.chosen_checkpoint

    @property
    def best_epoch(self) -> int | None:
        return None if self.best is None else self.best.chosen_epoch

    @property
    def best_beta(self) -> float | None:
        return None if self.best is None else self.best.beta


# --------------------------------------------------------------------------- selection


def select_run(
    run: RunRecord,
    window: int = 2,
    top: int | None = 3,
    rescored: Rescored | None = None,
) -> RunSelection:
    """Candidates of one run and its chosen checkpoint.

    The candidates come from the run's own DSE curve (:func:`candidate_indices`). The
    chosen one is the candidate with the highest rescored value when ``rescored`` gives
    values for any of them, else the candidate with the highest DSE.
    """
    candidates = tuple(candidate_indices(run.dse, window=window, top=top))
    lookup = _rescore_lookup(rescored)
    scores: dict[int, float] = {}
    if lookup is not None:
        for position in candidates:
            value = finite_or_none(lookup(run, run.evaluations[position]))
            if value is not None:
                scores[position] = value
    if scores:
        # max() keeps the first of equal values: ties go to the higher monitored DSE.
        chosen = max(candidates, key=lambda p: scores.get(p, -math.inf))
    else:
        chosen = candidates[0] if candidates else None
    return RunSelection(run, candidates, chosen, scores)


def select_best(
    runs: Iterable[RunRecord],
    *,
    window: int = 2,
    top: int | None = 3,
    rescored: Rescored | None = None,
    compare: str = "auto",
) -> SelectionResult:
    """Select every run's checkpoint, then the best run (and so the best beta).

    Args:
        runs: The runs of a sweep; ties between runs go to the earlier one.
        window: Candidate window, +- evaluations.
        top: Candidates kept per run (None: all local maxima).
        rescored: Held-out scores of candidates (see :data:`Rescored`): a mapping from
            checkpoint path to value or a callable ``(run, evaluation) -> value``.
        compare: ``"rescored"``, ``"conservative"``, ``"raw"``, or ``"auto"``
            (``"rescored"`` when ``rescored`` is given, else ``"conservative"``).
    """
    if compare not in COMPARE_MODES:
        raise ValueError(f"compare must be one of {COMPARE_MODES}, got {compare!r}")
    if compare == "auto":
        compare = "rescored" if rescored is not None else "conservative"
    if compare == "rescored" and rescored is None:
        raise ValueError('compare="rescored" needs rescored values (argument rescored)')

    trials = tuple(select_run(run, window, top, rescored) for run in runs)
    warnings = [
        f"trial {t.name}: {t.run.problem or 'no finite DSE evaluations'}; not selectable"
        for t in trials
        if t.chosen is None
    ]
    eligible = [t for t in trials if t.chosen is not None]

    if compare == "rescored":
        for t in eligible:
            if t.chosen_rescored is None:
                warnings.append(f"trial {t.name}: no rescored value for its candidates; left out")
        if not any(t.chosen_rescored is not None for t in eligible):
            raise ValueError("rescored gives no value for any candidate of any trial")
        eligible = [t for t in eligible if t.chosen_rescored is not None]
        score = lambda t: t.chosen_rescored  # noqa: E731
    elif compare == "conservative":
        betas = sorted({_beta_or_zero(t) for t in eligible})
        if len(betas) > 1:
            warnings.append(
                f"no rescoring: betas {betas[1:]} not compared with {betas[0]} (beta > 0 "
                "optimizes DSE itself); rescore the candidates on held-out images to choose beta"
            )
            eligible = [t for t in eligible if _beta_or_zero(t) == betas[0]]
        score = lambda t: t.chosen_dse  # noqa: E731
    else:
        if len({_beta_or_zero(t) for t in eligible}) > 1:
            warnings.append("raw DSE across betas is biased toward the largest beta")
        score = lambda t: t.chosen_dse  # noqa: E731

    best = None
    for t in eligible:  # strict > keeps the earlier run on ties
        if best is None or score(t) > score(best):
            best = t
    if best is not None:
        checkpoint = best.chosen_checkpoint
        if checkpoint is None:
            warnings.append(f"the selected evaluation of trial {best.name} has no checkpoint")
        elif not checkpoint.exists() and best.run.path is not None:
            warnings.append(f"the selected checkpoint does not exist: {checkpoint}")
    return SelectionResult(
        trials, best, compare, describe_rule(compare, window, top), window, top, tuple(warnings)
    )


def describe_rule(compare: str, window: int = 2, top: int | None = 3) -> str:
    """The selection rule in words, as written to ``selection.json``."""
    kept = "all of them" if top is None else f"the top {top} by DSE"
    text = (
        f"Candidates: local maxima of each trial's DSE within +-{window} evaluations, {kept} "
        "(non-finite DSE never a candidate). "
    )
    if compare == "rescored":
        return text + (
            "Chosen per trial: the candidate with the highest rescored DSE (every candidate "
            "scored on the same held-out probe images with the same estimator settings and "
            "seed). Best: the trial whose chosen candidate has the highest rescored DSE."
        )
    if compare == "conservative":
        return text + (
            "Chosen per trial: the candidate with the highest DSE. Best: the highest chosen "
            "DSE among the trials with the smallest beta (a missing beta counts as 0); "
            "trials with a larger beta are not credited, because beta > 0 optimizes DSE "
            "itself. Rescore candidates on held-out images to choose beta."
        )
    return text + (
        "Chosen per trial: the candidate with the highest DSE. Best: the highest chosen "
        "DSE over all trials (raw comparison, biased toward large beta)."
    )


# --------------------------------------------------------------------------- writing


def selection_to_dict(result: SelectionResult) -> dict[str, Any]:
    """The JSON-ready content of ``selection.json`` (non-finite numbers become null)."""
    best = result.best
    return {
        "best_checkpoint": _path_or_none(result.best_checkpoint),
        "best_epoch": result.best_epoch,
        "best_beta": result.best_beta,
        "best_trial": None if best is None else best.name,
        "best_dse": None if best is None else finite_or_none(best.chosen_dse),
        "best_rescored": None if best is None else best.chosen_rescored,
        "compare": result.compare,
        "rule": result.rule,
        "window": result.window,
        "top": result.top,
        "warnings": list(result.warnings),
        "trials": [_trial_to_dict(t, t is best) for t in result.trials],
    }


def write_selection(result: SelectionResult, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/selection.json`` atomically (temporary file, then ``os.replace``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(selection_to_dict(result), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(out_dir / SELECTION_FILE, text)


def _trial_to_dict(t: RunSelection, is_best: bool) -> dict[str, Any]:
    evaluations = t.run.evaluations
    return {
        "name": t.name,
        "path": _path_or_none(t.run.path),
        "beta": t.beta,
        "evaluations": t.evaluations,
        "candidates": t.candidate_epochs,
        "candidate_indices": [evaluations[p].index for p in t.candidates],
        "candidate_dse": [finite_or_none(evaluations[p].dse) for p in t.candidates],
        "candidate_rescored": [t.rescored.get(p) for p in t.candidates],
        "chosen_epoch": t.chosen_epoch,
        "chosen_index": t.chosen_index,
        "checkpoint": _path_or_none(t.chosen_checkpoint),
        "dse": finite_or_none(t.chosen_dse),
        "rescored": t.chosen_rescored,
        "stopped_early": t.stopped_early,
        "stop_reason": t.run.stop_reason,
        "problem": t.run.problem,
        "selected": is_best,
    }


# --------------------------------------------------------------------------- helpers


def _rescore_lookup(rescored: Rescored | None) -> Callable[[RunRecord, Evaluation], Any] | None:
    if rescored is None:
        return None
    if isinstance(rescored, Mapping):
        by_path = {_normalize(key): value for key, value in rescored.items()}

        def lookup(run: RunRecord, evaluation: Evaluation) -> Any:
            checkpoint = run.checkpoint_path(evaluation)
            return None if checkpoint is None else by_path.get(_normalize(checkpoint))

        return lookup
    if callable(rescored):
        return rescored
    raise TypeError(
        "rescored must be a mapping {checkpoint path: value} or a callable "
        f"(run, evaluation) -> value, got {type(rescored).__name__}"
    )


def _normalize(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _beta_or_zero(t: RunSelection) -> float:
    # A run that records no beta was not regularized.
    return 0.0 if t.beta is None else t.beta


def _path_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _as_floats(values: Sequence[float], name: str) -> list[float]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = []
    for i, value in enumerate(values):
        try:
            out.append(math.nan if value is None else float(value))
        except (TypeError, ValueError):
            raise TypeError(f"{name}[{i}] must be a number, got {value!r}") from None
    return out


def _check_int(name: str, value: object, *, minimum: int, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        suffix = f" {extra}" if extra else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}")
