"""Failure signatures in a run's DSE components: label-free warnings of a collapsed or
gamed run. Standard library only.

``dimension_collapse``
    ``M_dim`` falls below :data:`COLLAPSE_SHARE` of its running peak: the tokens lose
    their dimensionality (MAE with beta 0.1: 0.72 -> 0.015 by epoch 17).
``tight_clusters``
    The mean intra-cluster spread over the inter-cluster distance falls below
    :data:`TIGHTENING` times its first value: ever tighter, well separated clusters,
    which DSE rewards whether or not they are the classes (DINO with beta 0.1: x0.30
    while probe mIoU fell from 0.26 to 0.16).

The thresholds lie between the failed and the healthy runs of one CamVid study (10 runs,
2 failed; ``docs/selection.md``, section 3.2; ``benchmarks/selection_rules.py``): in
sample, so a warning is a reason to check with labels, not a verdict.

Example:
    >>> healthy = [{"inter": 0.5, "intra_image": 0.45, "intra_batch": 0.4, "dim": 0.3},
    ...            {"inter": 0.6, "intra_image": 0.4, "intra_batch": 0.35, "dim": 0.4}]
    >>> failure_signatures(healthy)
    []
    >>> collapsed = healthy + [{"inter": 0.8, "intra_image": 0.5, "intra_batch": 0.4, "dim": 0.02}]
    >>> [(s.kind, s.position) for s in failure_signatures(collapsed)]
    [('dimension_collapse', 2)]
    >>> print(failure_signatures(collapsed)[0].message)
    M_dim fell to 0.02 (5% of its peak 0.4): the tokens collapsed to few dimensions
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "COLLAPSE_SHARE",
    "SIGNATURES",
    "TIGHTENING",
    "FailureSignature",
    "failure_signature_listener",
    "failure_signatures",
    "run_signatures",
    "signature_warnings",
]

#: ``dimension_collapse`` fires when M_dim < this share of its running peak.
COLLAPSE_SHARE = 0.25
#: ``tight_clusters`` fires when mean(intra_image, intra_batch) / inter falls below this
#: share of its first finite value.
TIGHTENING = 0.5
SIGNATURES = ("dimension_collapse", "tight_clusters")


@dataclass(frozen=True)
class FailureSignature:
    """The first evaluation (``position`` in the history) where a signature showed."""

    kind: str
    position: int
    epoch: int | None
    value: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _component(row: Any, name: str) -> float:
    components = row.get("components", row) if isinstance(row, Mapping) else getattr(row, "components", {})
    value = components.get(name) if isinstance(components, Mapping) else None
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _epoch(row: Any) -> int | None:
    return row.get("epoch") if isinstance(row, Mapping) else getattr(row, "epoch", None)


def failure_signatures(history: Sequence[Any]) -> list[FailureSignature]:
    """The failure signatures of a component history, each at its first occurrence.

    ``history``: one entry per evaluation, in training order: a
    :class:`dse_tune.runs.Evaluation`, or a mapping with the components ``inter``,
    ``intra_image``, ``intra_batch``, ``dim`` (at the top level or under
    ``"components"``) and optionally ``epoch``. Missing or non-finite components are
    skipped.
    """
    found: dict[str, FailureSignature] = {}
    peak_dim, peak_epoch = -math.inf, None
    first_ratio: float | None = None
    for position, row in enumerate(history):
        dim, inter = _component(row, "dim"), _component(row, "inter")
        spread = (_component(row, "intra_image") + _component(row, "intra_batch")) / 2
        if math.isfinite(dim) and dim > peak_dim:
            peak_dim, peak_epoch = dim, _epoch(row)
        if "dimension_collapse" not in found and math.isfinite(dim) and peak_dim > 0 and dim < COLLAPSE_SHARE * peak_dim:
            found["dimension_collapse"] = FailureSignature(
                "dimension_collapse", position, _epoch(row), dim,
                f"M_dim fell to {dim:.2g} ({dim / peak_dim:.0%} of its peak {peak_dim:.2g}"
                + (f" at epoch {peak_epoch}" if peak_epoch is not None else "")
                + "): the tokens collapsed to few dimensions",
            )
        ratio = spread / inter if math.isfinite(spread) and math.isfinite(inter) and inter > 0 else math.nan
        if math.isfinite(ratio) and first_ratio is None:
            first_ratio = ratio
        if "tight_clusters" not in found and math.isfinite(ratio) and ratio < TIGHTENING * first_ratio:
            found["tight_clusters"] = FailureSignature(
                "tight_clusters", position, _epoch(row), ratio,
                f"intra-cluster spread fell to {ratio:.2f} of the inter-cluster distance (from {first_ratio:.2f}): "
                "ever tighter clusters, which DSE rewards whether or not they are the classes (seen in runs that "
                "gamed the regulariser)",
            )
    return sorted(found.values(), key=lambda s: (s.position, s.kind))


def run_signatures(run: Any) -> list[FailureSignature]:
    """:func:`failure_signatures` of a :class:`dse_tune.runs.RunRecord`'s evaluations."""
    return failure_signatures(list(run.evaluations))


def failure_signature_listener(
    warn: Callable[[str], None] | None = None,
    *,
    run_name: str | None = None,
    history: Callable[[], Sequence[Any]] | None = None,
) -> Callable[[Any, Any], None]:
    """A tracker listener, ``fn(evaluation, decision)``, that warns once per signature
    and run when a failure signature appears; it never stops the run.

    ``warn``: where the message goes (default :func:`warnings.warn`). ``history``: the
    run's evaluations so far, e.g. ``lambda: tracker.evaluations``, so that a resumed
    run is judged on its whole history; without it the listener keeps the evaluations it
    has heard. Add it with ``DSETracker.add_listener`` / ``DSEMonitor.add_listener`` or
    ``pretrain(..., listeners=[failure_signature_listener()])`` (pretrain adds one).

    Example:
        >>> messages = []
        >>> listener = failure_signature_listener(messages.append, run_name="mae_b0.1")
        >>> for dim in (0.7, 0.6, 0.01, 0.01):
        ...     listener({"inter": 0.8, "intra_image": 0.5, "intra_batch": 0.5, "dim": dim}, None)
        >>> len(messages), messages[0].split(":")[0]
        (1, 'run mae_b0.1')
    """
    warn = warn or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=2))
    heard: list[Any] = []
    reported: set[str] = set()

    def listener(evaluation: Any, decision: Any) -> None:
        heard.append(evaluation)
        for signature in failure_signatures(heard if history is None else history()):
            if signature.kind not in reported:
                reported.add(signature.kind)
                where = f"run {run_name}: " if run_name else ""
                at = f" (epoch {signature.epoch})" if signature.epoch is not None else ""
                warn(f"{where}{signature.kind}{at}: {signature.message}; check this run with labels")

    return listener


def signature_warnings(runs: Iterable[Any]) -> dict[str, list[FailureSignature]]:
    """Run name -> its failure signatures, for the runs that have any."""
    return {run.name: signatures for run in runs if (signatures := run_signatures(run))}
