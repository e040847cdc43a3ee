"""The decision of :func:`dse_tune.selection.select_best` in words and on disk:
``describe_rule`` (the rule), ``describe_decision`` (what was chosen, on what basis and
why, for a terminal or the demo) and ``selection.json`` (``selection_to_dict``,
``write_selection``). Standard library only.

Example:
    >>> from dse_tune.runs import RunRecord
    >>> from dse_tune.selection import select_best
    >>> runs = [RunRecord.from_values("b0", [0.1, 0.4, 0.6, 0.5], beta=0.0),
    ...         RunRecord.from_values("b1", [0.2, 0.7, 0.9, 0.8], beta=1.0)]
    >>> for line in describe_decision(select_best(runs))[:3]:
    ...     print(line)
    chosen: trial b0, beta 0, epoch 2 (basis: conservative)
    reason: highest DSE among the trials of the smallest beta (0); larger betas not credited
    reliability: noise unknown: degraded: evaluation 2 beats the latest (3) by 0.1; no noise recorded, so not known whether beyond it
    >>> selection_to_dict(select_best(runs))["basis"]
    'conservative'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse_tune.atomic import atomic_write_json
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW, NOISE_Z
from dse_tune.degradation import finite_or_none
from dse_tune.runs import SELECTION_FILE

if TYPE_CHECKING:
    from dse_tune.selection import RunSelection, SelectionResult

__all__ = ["describe_decision", "describe_rule", "selection_to_dict", "write_selection"]


def describe_rule(compare: str, window: int = CANDIDATE_WINDOW, top: int | None = CANDIDATE_TOP, *,
                  score: str = "raw", skip_untrained: bool = True) -> str:
    """The selection rule in words, as written to ``selection.json``."""
    kept = "all of them" if top is None else f"the top {top}"
    series = "run-standardised DSE" if score == "standardized" else "DSE"
    text = (
        f"Candidates: local maxima of each trial's {series} within +-{window} evaluations, {kept} "
        "(non-finite DSE never a candidate"
        + ("; a first evaluation at step 0 (untrained) only when no later one qualifies" if skip_untrained else "")
        + f"). Without labels the latest evaluation is kept unless the best candidate beats it by more than "
        f"{NOISE_Z:g} standard errors of the difference (dse_noise; a history that records none keeps DSE's pick, "
        "marked noise_unknown), and whenever the run's ranking verdict "
        "says DSE does not rank its checkpoints. "
    )
    if compare == "few_label":
        return text + (
            "Chosen: the shortlisted candidate (every trial's candidates) with the highest linear-probe mIoU, "
            "fitted on a few labelled images and scored on a disjoint labelled split."
        )
    if compare == "rescored":
        return text + (
            "Chosen per trial: the candidate with the highest rescored DSE (every candidate "
            "scored on the same held-out probe images with the same estimator settings and "
            "seed). Best: the trial whose chosen candidate has the highest rescored DSE."
        )
    if compare == "conservative":
        return text + (
            f"Chosen per trial: the candidate with the highest {series} (or rescored value). Best: the highest "
            "among the trials with the smallest beta (a missing beta counts as 0); "
            "trials with a larger beta are not credited, because beta > 0 optimizes DSE "
            "itself. Confirm with a few labels to choose beta."
        )
    return text + (
        f"Chosen per trial: the candidate with the highest {series}. Best: the highest chosen "
        f"{series} over all trials (raw comparison, biased toward large beta)."
    )


def describe_decision(result: SelectionResult, *, checkpoint: bool = True) -> list[str]:
    """The decision in a few printable lines: what was chosen, its basis, the reason,
    the checkpoint (unless ``checkpoint=False``), the warnings. For ``dse-tune select``,
    the sweep and the demo."""
    if result.best is None:
        lines = ["chosen: nothing (no trial has a candidate checkpoint)"]
    else:
        best = result.best
        beta = "-" if best.beta is None else f"{best.beta:g}"
        # The other verdicts' reasons open with their own words ("not reliable: ...").
        verdict = f"{best.verdict.replace('_', ' ')}: " if best.verdict in ("reliable", "noise_unknown") else ""
        lines = [
            f"chosen: trial {best.name}, beta {beta}, epoch {best.chosen_epoch} (basis: {result.basis})",
            f"reason: {result.reason}",
            f"reliability: {verdict}{best.reliability}",
        ]
        if best.chosen_confirmed is not None:
            lines.append(f"few-label mIoU of the chosen checkpoint: {best.chosen_confirmed:.4f}")
        if checkpoint and result.best_checkpoint is not None:
            lines.append(f"checkpoint: {result.best_checkpoint}")
    lines.extend(f"warning: {warning}" for warning in result.warnings)
    return lines


def selection_to_dict(result: SelectionResult) -> dict[str, Any]:
    """The JSON-ready content of ``selection.json`` (non-finite numbers become null)."""
    best = result.best
    return {
        "best_checkpoint": _path_or_none(result.best_checkpoint),
        "best_epoch": result.best_epoch,
        "best_beta": result.best_beta,
        "best_trial": None if best is None else best.name,
        "best_dse": None if best is None else finite_or_none(best.chosen_dse),
        "best_score": None if best is None else finite_or_none(best.chosen_score),
        "best_rescored": None if best is None else best.chosen_rescored,
        "best_few_label": None if best is None else best.chosen_confirmed,
        "basis": result.basis,
        "reliability": None if best is None else best.verdict,
        "reliability_reason": None if best is None else best.reliability,
        "reason": result.reason,
        "compare": result.compare,
        "score": result.score,
        "rule": result.rule,
        "window": result.window,
        "top": result.top,
        "skip_untrained": result.skip_untrained,
        "guard": result.guard,
        "parameters": dict(result.parameters),
        "warnings": list(result.warnings),
        "trials": [_trial_to_dict(t, t is best) for t in result.trials],
    }


def write_selection(result: SelectionResult, out_dir: str | os.PathLike, name: str = SELECTION_FILE) -> Path:
    """Write ``out_dir/name`` (default ``selection.json``) atomically."""
    return atomic_write_json(Path(out_dir) / name, selection_to_dict(result), allow_nan=False)


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
        "candidate_scores": [finite_or_none(t.scores[p]) for p in t.candidates],
        "candidate_rescored": [t.rescored.get(p) for p in t.candidates],
        "candidate_few_label": [t.confirmed.get(p) for p in t.candidates],
        "chosen_epoch": t.chosen_epoch,
        "reliability": t.verdict,
        "reliability_reason": t.reliability,
        "ranking_reliable": t.run.ranking_reliable,
        "chosen_index": t.chosen_index,
        "checkpoint": _path_or_none(t.chosen_checkpoint),
        "dse": finite_or_none(t.chosen_dse),
        "score": finite_or_none(t.chosen_score),
        "rescored": t.chosen_rescored,
        "few_label": t.chosen_confirmed,
        "failure_signatures": [s.to_dict() for s in t.signatures],
        "stopped_early": t.stopped_early,
        "stop_reason": t.run.stop_reason,
        "problem": t.run.problem,
        "selected": is_best,
    }


def _path_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)
