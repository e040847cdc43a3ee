"""After a sweep's trials: select its checkpoint and beta, and write the decision.

What ``dse-tune sweep`` runs once the trials are done (any tuner: it reads only the
sweep folder). The trials differ in ``dse_beta``, so DSE is no fair judge across them
(``docs/selection.md``): :func:`select_sweep` rescores every trial's candidates on one
held-out set (:func:`dse_tune.evaluation.rescore.rescore_sweep`: they choose within each
trial), then compares the trials by :func:`dse_tune.selection.select_best`'s default, the
smallest beta, or, when the search space names a labelled folder (``selection:
{confirm_with: DIR, label_images: 32}``), by the few-label probe mIoU of the shortlist
(:mod:`dse_tune.evaluation.few_label`), keeping the conservative choice beside it.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from dse_tune.runs import RunRecord, write_run
    >>> from dse_tune.search_space import parse_search_space
    >>> sweep = Path(tempfile.mkdtemp())
    >>> _ = write_run(sweep / "runs" / "t0", RunRecord.from_values("t0", [0.1, 0.5, 0.2], beta=0.0))
    >>> choice = select_sweep(sweep, parse_search_space({}), rescore=False)
    >>> choice.result.best.name, choice.result.best_epoch, [p.name for p in choice.written]
    ('runs/t0', 1, ['selection.json', 'selection.png'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse_tune.runs import RunRecord, load_sweep

if TYPE_CHECKING:
    from dse_tune.search_space import SweepSpec
    from dse_tune.selection import SelectionResult

__all__ = ["SELECTION_PLOT", "SweepChoice", "rescore_candidates", "select_sweep"]

#: The selection plot in the sweep folder (next to ``selection.json``).
SELECTION_PLOT = "selection.png"


@dataclass(frozen=True)
class SweepChoice:
    """What :func:`select_sweep` found and wrote."""

    runs: tuple[RunRecord, ...]
    #: None when no trial wrote a DSE history.
    result: SelectionResult | None = None
    #: Held-out DSE per candidate checkpoint; None without rescoring.
    rescored: Mapping[str, float] | None = None
    #: The label-free smallest-beta choice, beside a few-label one (None otherwise).
    conservative: SelectionResult | None = None
    written: tuple[Path, ...] = ()


def select_sweep(
    sweep_dir: str | os.PathLike,
    spec: SweepSpec,
    *,
    rescore: bool = True,
    rescore_data: Any = None,
    rescore_splits: Sequence[str] | None = None,
    rescore_size: int = 64,
    log: Callable[[str], None] = print,
) -> SweepChoice:
    """Rescore the candidates (optional), select, write ``selection.json``/``.png``.

    ``rescore_data``: held-out images for rescoring (a folder, ``"synthetic"`` or a
    dataset object; default: the trials' data minus their monitoring probe images).
    When rescoring fails, ``log`` says why and the trials are
    compared conservatively.
    """
    from dse_tune import selection
    from dse_tune.plotting import plot_selection

    sweep_dir = Path(sweep_dir)
    runs = tuple(load_sweep(sweep_dir))
    if not runs:
        return SweepChoice(runs)
    rescored = None
    if rescore:
        rescored = rescore_candidates(sweep_dir, spec, rescore_data, rescore_splits, rescore_size, log=log)
    confirmed, parameters = _confirm(runs, spec, log)
    if confirmed is not None:  # a few-label winner only beyond the spread of its scored images
        from dse_tune.evaluation.few_label import select_with_labels

        result = select_with_labels(runs, confirmed, window=spec.window, top=spec.top, rescored=rescored,
                                    parameters=parameters)
    else:
        result = selection.select_best(runs, window=spec.window, top=spec.top, rescored=rescored, parameters=parameters)
    written = (
        selection.write_selection(result, sweep_dir),
        plot_selection(result, sweep_dir / SELECTION_PLOT),
    )
    conservative = None
    if result.best is not None and result.compare != "conservative":
        conservative = selection.select_best(
            runs, window=spec.window, top=spec.top, rescored=rescored, compare="conservative"
        )
    return SweepChoice(runs, result, rescored, conservative, written)


def _confirm(runs: Sequence[RunRecord], spec: SweepSpec, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Few-label probe mIoU (with its spread) of the shortlisted candidates when the space
    names a labelled folder (``selection.confirm_with``): a
    :class:`~dse_tune.evaluation.few_label.FewLabelScores`; (None, {}) otherwise."""
    folder = getattr(spec, "confirm_with", None)
    if folder is None:
        return None, {}
    from dse_tune.evaluation.few_label import confirm_candidates

    scores = confirm_candidates(runs, folder, label_images=spec.label_images, window=spec.window, top=spec.top,
                                progress=False)
    log(f"few-label confirmation: {len(scores.values)} candidate(s) probed with {scores.labels_used} labelled images")
    parameters = {"confirm_with": folder, "label_images": spec.label_images, "labels_used": scores.labels_used,
                  "few_label_images": scores.description, "few_label_problems": scores.problems}
    return scores, parameters


def rescore_candidates(
    sweep_dir: Path,
    spec: SweepSpec,
    data: Any = None,
    splits: Sequence[str] | None = None,
    size: int = 64,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, float] | None:
    """Held-out DSE of every candidate, or None (with the reason, to ``log``) when not possible."""
    import torch

    from dse_tune.evaluation.rescore import rescore_sweep

    device = "cuda" if spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    try:
        rescored = rescore_sweep(sweep_dir, data, splits=splits, held_out_size=size, window=spec.window, top=spec.top,
                                 device=device, progress=False)
    except (OSError, ValueError, TypeError) as error:
        log(f"rescoring failed ({error}); comparing trials conservatively")
        return None
    log(f"rescored {len(rescored)} candidate checkpoint(s) on held-out images")
    return rescored
