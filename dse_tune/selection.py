"""Label-free selection: candidate checkpoints per run, then the best run and beta.

Standard library only. Runs are :class:`~dse_tune.runs.RunRecord` objects from anywhere
(:func:`dse_tune.runs.load_sweep` reads run folders; an Optuna study or a Ray result grid
only has to build them). The plot is :func:`dse_tune.plotting.plot_selection`; the file
and the printed decision are :mod:`dse_tune.selection_output`.

Within a run, the choice is :func:`dse_tune.decision.run_choice`, the one decision every
tool makes (the paper's candidates, then the noise and the ranking verdict). Across runs,
DSE is not a fair judge when the runs differ in ``beta`` (``beta > 0`` optimizes DSE
itself; on CamVid held-out rescored DSE was raised just as much), so :func:`select_best`
keeps the smallest beta (``"conservative"``) or, given a few labels, decides by probe
mIoU (``"few_label"``); see ``docs/selection.md``.

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
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse_tune.decision import (
    CANDIDATE_TOP, CANDIDATE_WINDOW, KEPT_LATEST, Choice, as_floats, candidate_indices, class_relevance, finite_or_none,
    run_choice, standardized_series,
)
from dse_tune.runs import Evaluation, RunRecord, load_sweep
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
    "select_folder",
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


def standardized_dse(run: RunRecord, lam: float = 1.0) -> list[float]:
    """The run-standardised DSE of every evaluation (:func:`dse_tune.decision.standardized_series`
    of its class relevance and M_dim); NaN where a component is missing.

    Example:
        >>> run = RunRecord.from_values("r", [0.0, 0.0])
        >>> standardized_dse(run)
        Traceback (most recent call last):
        ...
        ValueError: run r: score="standardized" needs the DSE components (inter, intra_image, intra_batch, dim) of its evaluations; none has them
    """
    relevance = [class_relevance(e.components) for e in run.evaluations]
    dim = [finite_or_none(e.components.get("dim")) for e in run.evaluations]
    if run.evaluations and all(r is None or d is None for r, d in zip(relevance, dim)):
        raise ValueError(
            f'run {run.name}: score="standardized" needs the DSE components (inter, intra_image, '
            "intra_batch, dim) of its evaluations; none has them"
        )
    return standardized_series(as_floats(relevance, "relevance"), as_floats(dim, "dim"), lam)


def run_scores(run: RunRecord, score: str = "raw") -> list[float]:
    """The series a run's candidates are ranked by: ``"raw"`` DSE or ``"standardized"``."""
    if score == "raw":
        return list(run.dse)
    if score == "standardized":
        return standardized_dse(run)
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


#: Held-out DSE (or few-label mIoU) of candidates: {checkpoint path: value} or a callable
#: ``(run, evaluation) -> value``; None/non-finite means "no value".
Rescored = Mapping[str | os.PathLike, float] | Callable[[RunRecord, Evaluation], Any]


@dataclass(frozen=True)
class RunSelection:
    """The candidates and the chosen checkpoint of one run.

    ``candidates`` and ``chosen`` are positions in ``run.evaluations``; ``scores`` the
    series they were ranked by; ``rescored`` / ``confirmed`` map candidate positions to
    their held-out DSE / few-label mIoU, for those that have one; ``signatures`` the
    run's failure signatures (:mod:`dse_tune.signals`); ``choice`` the label-free
    decision (:func:`dse_tune.decision.run_choice`: its verdict says how reliable it is).
    """

    run: RunRecord
    candidates: tuple[int, ...] = ()
    chosen: int | None = None
    rescored: Mapping[int, float] = field(default_factory=dict)
    scores: tuple[float, ...] = ()
    confirmed: Mapping[int, float] = field(default_factory=dict)
    signatures: tuple[FailureSignature, ...] = ()
    choice: Choice | None = None

    name = property(lambda self: self.run.name, doc="The run's name.")
    beta = property(lambda self: self.run.beta, doc="The run's beta (None when not recorded).")
    evaluations = property(lambda self: len(self.run.evaluations), doc="Number of evaluations.")
    stopped_early = property(lambda self: self.run.stopped_early, doc="Whether the run was stopped.")

    @property
    def verdict(self) -> str:
        """How reliable the choice is: a :data:`dse_tune.decision.VERDICTS` entry, or
        ``"few_label"`` / ``"rescored"`` when those values decided."""
        if self.confirmed:
            return "few_label"
        if self.rescored and self._rescored_decided:
            return "rescored"
        return "none" if self.choice is None else self.choice.verdict

    @property
    def reliability(self) -> str:
        """One line: what the choice rests on and how reliable it is."""
        if self.confirmed or (self.rescored and self._rescored_decided):
            return f"chosen by {'few-label mIoU' if self.confirmed else 'held-out rescored DSE'} among the candidates"
        return "no finite DSE" if self.choice is None else self.choice.reason

    @property
    def _rescored_decided(self) -> bool:
        # rescored values choose unless the label-free choice kept the latest for want of reliability (select_run)
        return self.choice is not None and self.choice.verdict not in KEPT_LATEST

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
    window: int = CANDIDATE_WINDOW
    top: int | None = CANDIDATE_TOP
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
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    rescored: Rescored | None = None,
    *,
    score: str = "raw",
    skip_untrained: bool = True,
    confirmed: Rescored | None = None,
    ranking: tuple[bool | None, str] | None = None,
    use_noise: bool = True,
) -> RunSelection:
    """Candidates of one run and its chosen checkpoint.

    The label-free choice is :func:`dse_tune.decision.run_choice` over the run's ``score``
    curve (arguments as in :func:`select_best`; ``ranking``: this run's ``(reliable,
    reason)``). Labels win over it: the candidate with the highest ``confirmed`` value
    when any has one. Held-out ``rescored`` values choose among the candidates only when
    that choice does not keep the latest for want of reliability (:data:`~dse_tune.decision.KEPT_LATEST`).
    """
    scores = run_scores(run, score)
    # dse_noise is in raw DSE units: a standardised series is compared without it.
    choice = run_choice(run, window, top, scores=scores, ranking=ranking, skip_untrained=skip_untrained,
                        use_noise=use_noise and score == "raw")
    candidates = choice.candidates
    rescored_values = _values_for(run, candidates, rescored)
    confirmed_values = _values_for(run, candidates, confirmed)
    # Held-out rescored DSE re-ranks DSE's candidates but never sees the latest checkpoint, so
    # it cannot tell a drop within the noise (or a ranking DSE cannot make) from a real one.
    decisive = confirmed_values or (rescored_values if choice.verdict not in KEPT_LATEST else {})
    # max() keeps the first of equal values: ties go to the higher score.
    chosen = max(candidates, key=lambda p: decisive.get(p, -math.inf)) if decisive else choice.chosen
    return RunSelection(
        run, candidates, chosen, rescored_values, tuple(scores), confirmed_values, tuple(run_signatures(run)), choice
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
            if t.chosen_rescored is None and t.rescored and t.chosen not in t.rescored:
                # rescored values choose only where the trial's own choice is reliable (select_run)
                warnings.append(f"trial {t.name}: its kept checkpoint was not rescored ({t.reliability}); left out")
            elif t.chosen_rescored is None:
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
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    rescored: Rescored | None = None,
    compare: str = "auto",
    score: str = "raw",
    skip_untrained: bool = True,
    guard: bool = True,
    confirmed: Rescored | None = None,
    parameters: Mapping[str, Any] | None = None,
    ranking: Mapping[str, tuple[bool | None, str]] | None = None,
    use_noise: bool = True,
) -> SelectionResult:
    """Select every run's checkpoint, then the best run (and so the best beta).

    Args:
        runs: the runs of a sweep; ties between runs go to the earlier one.
        window, top: the candidates: local maxima within +-``window`` evaluations, the
            ``top`` highest (None: all).
        rescored: held-out DSE of candidates (see :data:`Rescored`); decides within
            each run, and across runs only with ``compare="rescored"``.
        compare: one of :data:`COMPARE_MODES`; ``"auto"`` is ``"few_label"`` when
            ``confirmed`` is given, else ``"conservative"`` (the smallest beta only).
        score: rank candidates by ``"raw"`` DSE or the run-``"standardized"`` DSE.
        skip_untrained: a first evaluation at step 0 (before any optimizer step) is a
            candidate only when no later one is.
        guard: (conservative) leave out trials whose chosen checkpoint follows a failure
            signature (:mod:`dse_tune.signals`) while a trial without one remains.
        confirmed: few-label probe mIoU of candidates (same forms as ``rescored``),
            e.g. :func:`dse_tune.evaluation.few_label.confirm_candidates`.
        parameters: extra settings recorded with the decision (e.g. ``label_images``).
        ranking: per run name, ``(reliable, reason)`` (default: each run's recorded
            verdict, :mod:`dse_tune.reliability`); not reliable keeps the latest checkpoint.
        use_noise: an earlier checkpoint beats the latest only beyond the recorded noise
            (``dse_noise``, raw DSE units: with ``score="raw"`` only).
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

    options = {"score": score, "skip_untrained": skip_untrained, "confirmed": confirmed, "use_noise": use_noise}
    trials = tuple(
        select_run(run, window, top, rescored, ranking=(ranking or {}).get(run.name), **options) for run in runs
    )
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

    best = max(eligible, key=value, default=None)  # max keeps the first of ties: the earlier run
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


def select_folder(root: str | os.PathLike, **options: Any) -> SelectionResult:
    """:func:`select_best` of every run at or below ``root`` (:func:`dse_tune.runs.load_sweep`):
    the decision ``dse-tune select ROOT`` makes, for callers that only have a folder (the
    demo's label check)."""
    return select_best(load_sweep(root), **options)


# Re-exported, and imported last: they need the types above.
from dse_tune.selection_output import describe_decision, describe_rule, selection_to_dict, write_selection  # noqa: E402


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
