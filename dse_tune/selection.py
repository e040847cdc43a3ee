"""Label-free selection: candidate checkpoints per run, then the best run and beta.

Pure Python (standard library only). The data model (:class:`~dse_tune.runs.RunRecord`)
does not care where histories come from: :func:`dse_tune.runs.load_sweep` reads run
folders, and any other source (an Optuna study, a Ray result grid) only has to build
``RunRecord`` objects. The plot is :func:`dse_tune.plotting.plot_selection`; the file
and the printed decision are :mod:`dse_tune.selection_output`.

Within a run (the paper's protocol): the candidates are the local maxima of the run's
DSE curve (``score="raw"``, or the run-standardised DSE, ``score="standardized"``)
within +-``window`` evaluations, the ``top`` highest of them; the run's first
evaluation, when it is at epoch 0 or step 0 (a nearly untrained model), is not a
candidate when a later one exists (``skip_untrained``). The chosen checkpoint is the best candidate.

Across runs, DSE is not a fair judge when the runs differ in ``beta`` (``beta > 0``
optimizes DSE itself; on CamVid held-out rescored DSE was raised just as much), so
:func:`select_best` keeps the smallest beta (``"conservative"``) or, given a few
labels, decides by probe mIoU (``"few_label"``); see ``docs/selection.md``.

Example:
    >>> candidate_indices([0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.35, 0.6], window=2, top=3)
    [4, 7, 1]
    >>> runs = [
    ...     RunRecord.from_values("beta=0", [0.1, 0.4, 0.6, 0.5, 0.3], beta=0.0),
    ...     RunRecord.from_values("beta=1", [0.2, 0.7, 0.9, 0.8, 0.8], beta=1.0),
    ... ]
    >>> select_best(runs, compare="raw").best.name  # beta=1 optimized DSE itself
    'beta=1'
    >>> result = select_best(runs)  # beta=1 is not credited
    >>> result.best.name, result.best_epoch, result.best_beta, result.basis
    ('beta=0', 2, 0.0, 'conservative')
    >>> labels = {("beta=0", 2): 0.31, ("beta=1", 2): 0.35}
    >>> confirmed = select_best(runs, confirmed=lambda run, ev: labels.get((run.name, ev.index)))
    >>> confirmed.best.name, confirmed.compare, confirmed.basis
    ('beta=1', 'few_label', 'few_label')
"""

from __future__ import annotations

import math
import numbers
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse_tune.degradation import finite_or_none
from dse_tune.runs import Evaluation, RunRecord
from dse_tune.signals import FailureSignature, run_signatures

__all__ = [
    "BASES",
    "COMPARE_MODES",
    "SCORES",
    "Rescored",
    "RunSelection",
    "SelectionResult",
    "candidate_indices",
    "describe_decision",
    "describe_rule",
    "run_scores",
    "select_best",
    "select_run",
    "selection_to_dict",
    "standardized_dse",
    "write_selection",
]

COMPARE_MODES = ("auto", "conservative", "few_label", "rescored", "raw")
#: What a run's candidates are ranked by.
SCORES = ("raw", "standardized")
#: What a decision rests on (``selection.json["basis"]``).
BASES = ("label_free_dse", "conservative", "few_label")


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


def standardized_dse(run: RunRecord, lam: float = 1.0) -> list[float]:
    """The run-standardised DSE of every evaluation (the paper's README; the formula of
    :func:`dse_tune.metrics.standardize.standardize_dse` in pure Python, deviations over
    the evaluations with finite components); NaN where a component is missing.

    Example:
        >>> run = RunRecord.from_values("r", [0.0, 0.0])
        >>> standardized_dse(run)
        Traceback (most recent call last):
        ...
        ValueError: run r: score="standardized" needs the DSE components (inter, intra_image, intra_batch, dim) of its evaluations; none has them
    """
    relevance, dim = [], []
    for evaluation in run.evaluations:
        parts = [finite_or_none(evaluation.components.get(k)) for k in ("inter", "intra_image", "intra_batch", "dim")]
        ok = all(p is not None for p in parts)
        relevance.append(parts[0] - (parts[1] + parts[2]) / 2 if ok else math.nan)
        dim.append(parts[3] if ok else math.nan)
    finite = [i for i, r in enumerate(relevance) if math.isfinite(r)]
    if run.evaluations and not finite:
        raise ValueError(
            f'run {run.name}: score="standardized" needs the DSE components (inter, intra_image, '
            "intra_batch, dim) of its evaluations; none has them"
        )
    # A zero deviation (one evaluation, a constant series) leaves its term unscaled.
    scale_r = (statistics.pstdev([relevance[i] for i in finite]) if finite else 0.0) or 1.0
    scale_d = (statistics.pstdev([dim[i] for i in finite]) if finite else 0.0) or 1.0
    return [r / scale_r + lam * d / scale_d for r, d in zip(relevance, dim, strict=True)]


def run_scores(run: RunRecord, score: str = "raw") -> list[float]:
    """The series a run's candidates are ranked by: ``"raw"`` DSE or ``"standardized"``."""
    if score == "raw":
        return list(run.dse)
    if score == "standardized":
        return standardized_dse(run)
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


# --------------------------------------------------------------------------- data model


#: Held-out DSE (or few-label mIoU) of candidates: {checkpoint path: value} or a callable
#: ``(run, evaluation) -> value``; None/non-finite means "no value".
Rescored = Mapping[str | os.PathLike, float] | Callable[[RunRecord, Evaluation], Any]


@dataclass(frozen=True)
class RunSelection:
    """The candidates and the chosen checkpoint of one run.

    ``candidates`` and ``chosen`` are positions in ``run.evaluations``; ``scores`` the
    series they were ranked by; ``rescored`` / ``confirmed`` map candidate positions to
    their held-out DSE / few-label mIoU, for those that have one; ``signatures`` the
    run's failure signatures (:mod:`dse_tune.signals`).
    """

    run: RunRecord
    candidates: tuple[int, ...] = ()
    chosen: int | None = None
    rescored: Mapping[int, float] = field(default_factory=dict)
    scores: tuple[float, ...] = ()
    confirmed: Mapping[int, float] = field(default_factory=dict)
    signatures: tuple[FailureSignature, ...] = ()

    name = property(lambda self: self.run.name, doc="The run's name.")
    beta = property(lambda self: self.run.beta, doc="The run's beta (None when not recorded).")
    evaluations = property(lambda self: len(self.run.evaluations), doc="Number of evaluations.")
    stopped_early = property(lambda self: self.run.stopped_early, doc="Whether the run was stopped.")

    @property
    def chosen_evaluation(self) -> Evaluation | None:
        return None if self.chosen is None else self.run.evaluations[self.chosen]

    @property
    def chosen_index(self) -> int | None:
        return getattr(self.chosen_evaluation, "index", None)

    @property
    def chosen_epoch(self) -> int | None:
        return getattr(self.chosen_evaluation, "epoch", None)

    @property
    def chosen_dse(self) -> float | None:
        return getattr(self.chosen_evaluation, "dse", None)

    @property
    def chosen_score(self) -> float | None:
        """The ranking score (raw or standardised DSE) of the chosen checkpoint."""
        return None if self.chosen is None or not self.scores else self.scores[self.chosen]

    @property
    def chosen_rescored(self) -> float | None:
        return None if self.chosen is None else self.rescored.get(self.chosen)

    @property
    def chosen_confirmed(self) -> float | None:
        return None if self.chosen is None else self.confirmed.get(self.chosen)

    @property
    def chosen_checkpoint(self) -> Path | None:
        evaluation = self.chosen_evaluation
        return None if evaluation is None else self.run.checkpoint_path(evaluation)

    @property
    def candidate_epochs(self) -> list[int | None]:
        return [self.run.evaluations[i].epoch for i in self.candidates]

    @property
    def suspect(self) -> FailureSignature | None:
        """The first failure signature at or before the chosen checkpoint, if any."""
        if self.chosen is None:
            return None
        return next((s for s in self.signatures if s.position <= self.chosen), None)


@dataclass(frozen=True)
class SelectionResult:
    """Every run's selection, the winner (None if no run has a candidate), the rule, what
    the decision rests on (``basis``, one of :data:`BASES`) and why (``reason``)."""

    trials: tuple[RunSelection, ...]
    best: RunSelection | None
    compare: str
    rule: str
    window: int = 2
    top: int | None = 3
    warnings: tuple[str, ...] = ()
    score: str = "raw"
    basis: str = "label_free_dse"
    reason: str = ""
    skip_untrained: bool = True
    guard: bool = True
    parameters: Mapping[str, Any] = field(default_factory=dict)

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


def _untrained(evaluation: Evaluation) -> bool:  # at most one epoch of training
    return evaluation.epoch == 0 or evaluation.global_step == 0 or (evaluation.epoch is None and evaluation.global_step is None)


def _candidates(run: RunRecord, values: list[float], window: int, top: int | None, skip_untrained: bool) -> list[int]:
    # A first evaluation within the first epoch is (nearly) the untrained model; its DSE
    # is often a transient, so it competes only when nothing later qualifies.
    if skip_untrained and len(values) > 1 and _untrained(run.evaluations[0]):
        later = candidate_indices([math.nan] + values[1:], window=window, top=top)
        if later:
            return later
    return candidate_indices(values, window=window, top=top)


def _values_for(run: RunRecord, positions: Iterable[int], scores: Rescored | None) -> dict[int, float]:
    lookup = _rescore_lookup(scores)
    found: dict[int, float] = {}
    if lookup is not None:
        for position in positions:
            value = finite_or_none(lookup(run, run.evaluations[position]))
            if value is not None:
                found[position] = value
    return found


def select_run(
    run: RunRecord,
    window: int = 2,
    top: int | None = 3,
    rescored: Rescored | None = None,
    *,
    score: str = "raw",
    skip_untrained: bool = True,
    confirmed: Rescored | None = None,
) -> RunSelection:
    """Candidates of one run and its chosen checkpoint.

    The candidates come from the run's own ``score`` curve (:func:`candidate_indices`;
    with ``skip_untrained`` an untrained first evaluation only when no later one qualifies). The
    chosen one is the candidate with the highest ``confirmed`` (few-label) value when
    any has one, else the highest ``rescored`` value, else the highest score.
    """
    scores = run_scores(run, score)
    candidates = tuple(_candidates(run, scores, window, top, skip_untrained))
    rescored_values = _values_for(run, candidates, rescored)
    confirmed_values = _values_for(run, candidates, confirmed)
    decisive = confirmed_values or rescored_values
    if decisive:
        # max() keeps the first of equal values: ties go to the higher score.
        chosen = max(candidates, key=lambda p: decisive.get(p, -math.inf))
    else:
        chosen = candidates[0] if candidates else None
    return RunSelection(
        run, candidates, chosen, rescored_values, tuple(scores), confirmed_values, tuple(run_signatures(run))
    )


def _guarded(eligible: list[RunSelection], warnings: list[str]) -> list[RunSelection]:
    """Leave out trials whose chosen checkpoint follows a failure signature, while a
    trial without one remains."""
    healthy = [t for t in eligible if t.suspect is None]
    if healthy and len(healthy) < len(eligible):
        for t in eligible:
            if t.suspect is not None:
                warnings.append(f"trial {t.name}: left out, its chosen checkpoint follows {t.suspect.kind}")
        return healthy
    return eligible


def _compare(compare: str, eligible: list, warnings: list[str], all_betas: set[float]) -> tuple[list, Callable, str, str]:
    """The competing trials, their score, the basis and reason (``all_betas``: before the guard)."""
    betas = sorted({_beta_or_zero(t) for t in eligible})
    if compare == "few_label":
        for t in eligible:
            if t.chosen_confirmed is None:
                warnings.append(f"trial {t.name}: no few-label score for its candidates; left out")
        eligible = [t for t in eligible if t.chosen_confirmed is not None]
        if not eligible:
            raise ValueError("confirmed gives no few-label score for any candidate of any trial")
        reason = "highest linear-probe mIoU on held-back labelled images among the DSE-shortlisted candidates"
        return eligible, lambda t: t.chosen_confirmed, "few_label", reason
    if compare == "rescored":
        for t in eligible:
            if t.chosen_rescored is None:
                warnings.append(f"trial {t.name}: no rescored value for its candidates; left out")
        if not any(t.chosen_rescored is not None for t in eligible):
            raise ValueError("rescored gives no value for any candidate of any trial")
        if len(betas) > 1:
            warnings.append("rescored DSE across betas is biased toward the largest beta (the regulariser raises "
                            "DSE on any image); on CamVid it chose the worse beta every time")
        eligible = [t for t in eligible if t.chosen_rescored is not None]
        return eligible, lambda t: t.chosen_rescored, "label_free_dse", "highest held-out rescored DSE over all trials"
    if compare == "conservative" and len(all_betas) > 1:
        if len(betas) > 1:
            warnings.append(
                f"betas {betas[1:]} not compared with {betas[0]}: beta > 0 raises DSE itself; "
                "confirm with a few labels (--confirm-with DIR) to choose beta"
            )
        eligible = [t for t in eligible if _beta_or_zero(t) == betas[0]]
        # The guard may have left out every trial of a smaller beta: say so.
        guarded = " without a failure signature" if min(all_betas) != betas[0] else ""
        reason = f"highest DSE among the trials of the smallest beta{guarded} ({betas[0]:g}); larger betas not credited"
        return eligible, lambda t: t.chosen_score, "conservative", reason
    if compare == "raw" and len(betas) > 1:
        warnings.append("raw DSE across betas is biased toward the largest beta")
    return eligible, lambda t: t.chosen_score, "label_free_dse", "highest DSE over all trials"


def select_best(
    runs: Iterable[RunRecord],
    *,
    window: int = 2,
    top: int | None = 3,
    rescored: Rescored | None = None,
    compare: str = "auto",
    score: str = "raw",
    skip_untrained: bool = True,
    guard: bool = True,
    confirmed: Rescored | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> SelectionResult:
    """Select every run's checkpoint, then the best run (and so the best beta).

    Args:
        runs: The runs of a sweep; ties between runs go to the earlier one.
        window: Candidate window, +- evaluations.
        top: Candidates kept per run (None: all local maxima).
        rescored: Held-out DSE of candidates (see :data:`Rescored`); decides within
            each run, and across runs only with ``compare="rescored"``.
        compare: ``"conservative"``, ``"few_label"``, ``"rescored"``, ``"raw"``, or
            ``"auto"`` (``"few_label"`` when ``confirmed`` is given, else ``"conservative"``).
        score: rank candidates by ``"raw"`` DSE or the run-``"standardized"`` DSE.
        skip_untrained: a first evaluation at epoch 0 or step 0 (at most one epoch of
            training) is a candidate only when no later one is.
        guard: (conservative) leave out trials whose chosen checkpoint follows a failure
            signature (:mod:`dse_tune.signals`) while a trial without one remains.
        confirmed: few-label probe mIoU of candidates (same forms as ``rescored``),
            e.g. :func:`dse_tune.evaluation.few_label.confirm_candidates`.
        parameters: extra settings recorded with the decision (e.g. ``label_images``).
    """
    if compare not in COMPARE_MODES:
        raise ValueError(f"compare must be one of {COMPARE_MODES}, got {compare!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if compare == "auto":
        compare = "few_label" if confirmed is not None else "conservative"
    if compare == "rescored" and rescored is None:
        raise ValueError('compare="rescored" needs rescored values (argument rescored)')
    if compare == "few_label" and confirmed is None:
        raise ValueError('compare="few_label" needs few-label scores (argument confirmed)')

    options = {"score": score, "skip_untrained": skip_untrained, "confirmed": confirmed}
    trials = tuple(select_run(run, window, top, rescored, **options) for run in runs)
    warnings = [
        f"trial {t.name}: {t.run.problem or 'no finite DSE evaluations'}; not selectable"
        for t in trials
        if t.chosen is None
    ]
    for t in trials:
        warnings.extend(f"trial {t.name}: {s.kind} at epoch {s.epoch}: {s.message}" for s in t.signatures)
    eligible = [t for t in trials if t.chosen is not None]
    all_betas = {_beta_or_zero(t) for t in eligible}
    if guard and compare == "conservative":
        eligible = _guarded(eligible, warnings)
    eligible, value, basis, reason = _compare(compare, eligible, warnings, all_betas)

    best = None
    for t in eligible:  # strict > keeps the earlier run on ties
        if best is None or value(t) > value(best):
            best = t
    if best is not None:
        checkpoint = best.chosen_checkpoint
        if checkpoint is None:
            warnings.append(f"the selected evaluation of trial {best.name} has no checkpoint")
        elif not checkpoint.exists() and best.run.path is not None:
            warnings.append(f"the selected checkpoint does not exist: {checkpoint}")
    rule = describe_rule(compare, window, top, score=score, skip_untrained=skip_untrained)
    return SelectionResult(
        trials, best, compare, rule, window, top, tuple(warnings), score, basis, reason, skip_untrained, guard,
        dict(parameters or {}),
    )


from dse_tune.selection_output import (  # noqa: E402  (re-exported; they need the types above)
    describe_decision,
    describe_rule,
    selection_to_dict,
    write_selection,
)


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
