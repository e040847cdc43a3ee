"""Is DSE's ranking of a run's checkpoints reliable? A label-free verdict per run.

Nothing in one DSE curve says whether its ranking of the checkpoints is right. The
probe-regime study (docs/validation.md, "Probe regime"; ``benchmarks/probe_regime.py``)
measured on 14 CamVid runs against linear-probe mIoU:

- **Sampling noise does not say it.** Split-half agreement and agreement between the
  monitoring and the test images were +0.5 to +1.0 on runs DSE ranked wrongly and well.
- **The probe regime does not say it either.** The agreement between the rankings at
  the training size and at 1.5x (:func:`ranking_agreement`) was +0.95 on a run DSE
  ranked badly and -0.60 on one it ranked well: 1 hit in 3, 1 false alarm in 1.
- **What DSE's own components say did separate them, on these runs.** DSE =
  class relevance (``inter - (intra_image + intra_batch) / 2``, the k-means cluster
  term) + ``dim``. Where DSE tracked mIoU, its rise came from ``dim`` while the cluster
  term stayed flat or fell (Kendall tau(class relevance, DSE) -0.27 and -0.35); where
  it did not, DSE moved with its cluster term (tau +0.11 to +0.94: tighter k-means
  clusters that are not the classes). :func:`ranking_verdict` flags that (tau > 0.5)
  from numbers the monitor already records: no extra scoring. It was found on the same
  runs it is judged on: treat its rates (6 of 11 badly ranked runs flagged, 1 false
  alarm in 3 well ranked ones; docs/validation.md) as a first estimate, not a guarantee.
  Out of sample (docs/validation.md, 6.2-6.3): 2 hits in 4 badly ranked runs (it missed
  both DINO seeds), 1 false alarm in 3 well ranked runs.

Every function takes plain numbers: one value per evaluation in evaluation order, NaN
or None for one that could not be scored (left out). The selector takes the verdict as
plain data (``ranking_reliable`` and a reason, :mod:`dse_tune.decision`): when it is
False it keeps the latest checkpoint.

Example:
    >>> dse = [0.30, 0.35, 0.41, 0.44, 0.52, 0.55]
    >>> cluster_term = [0.10, 0.14, 0.19, 0.22, 0.29, 0.33]   # DSE rises with it
    >>> ranking_verdict(dse, cluster_term).reliable
    False
    >>> ranking_verdict(dse, [0.10, 0.09, 0.10, 0.08, 0.09, 0.07]).reliable   # dim drives it
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from dse_tune.arguments import check_int


#: tau(class relevance, DSE) above this: DSE's ranking is driven by its cluster term
#: (on the study's 14 runs a threshold of 0 flagged 11 of 11 badly ranked, and 1 of 3 good).
CLUSTER_THRESHOLD = 0.5
#: Fewer scored evaluations than this: no verdict (tau over 4 points takes 7 values).
MIN_EVALUATIONS = 5


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long series; None when undefined (fewer than 2
    values, or a constant series). NaN values are an error: drop them first.

    Example:
        >>> kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
        0.6666666666666666
        >>> kendall_tau([1, 2, 3], [3, 2, 1])
        -1.0
        >>> kendall_tau([1, 1, 1], [1, 2, 3]) is None
        True
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau needs two series of one length, got {len(x)} and {len(y)} values")
    a, b = [float(v) for v in x], [float(v) for v in y]
    if not all(math.isfinite(v) for v in a + b):
        raise ValueError("kendall_tau got NaN or infinite values; drop them first")
    if len(a) < 2:
        return None
    # Pure Python (a run has at most a few hundred evaluations): the decision path that
    # calls it loads only the standard library.
    concordance = ties_a = ties_b = pairs = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            sign_a, sign_b = _sign(a[i] - a[j]), _sign(b[i] - b[j])
            concordance += sign_a * sign_b
            ties_a += sign_a == 0
            ties_b += sign_b == 0
            pairs += 1
    denominator = math.sqrt((pairs - ties_a) * (pairs - ties_b))
    if denominator == 0:
        return None
    return concordance / denominator


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


@dataclass(frozen=True)
class RankingVerdict:
    """Whether DSE's checkpoint ranking of one run can be trusted.

    ``reliable``: True, False, or None when there is too little to judge; ``reason``: one
    sentence for the user (what was compared, and the number); ``agreement``: the statistic
    behind it (:func:`cluster_driven`), or None; ``evaluations``: how many were scored.
    """

    reliable: bool | None
    reason: str
    agreement: float | None
    evaluations: int = 0


def _pairs(x: Sequence[float | None], y: Sequence[float | None], names: tuple[str, str]) -> list[tuple[float, float]]:
    if len(x) != len(y):
        raise ValueError(f"{names[0]} has {len(x)} evaluations but {names[1]} has {len(y)}")
    return [(float(a), float(b)) for a, b in zip(x, y) if _finite(a) and _finite(b)]  # type: ignore[arg-type]


def ranking_agreement(primary: Sequence[float | None], alternate: Sequence[float | None]) -> float | None:
    """Kendall tau between two rankings of the same checkpoints (e.g. DSE at the
    training size and at 1.5x), over the evaluations scored in both; None when
    undefined. A measurement for reports: the study found it no guide to whether the
    primary ranking is right (module docstring).

    Example:
        >>> ranking_agreement([0.4, 0.3, 0.2, None], [-0.1, 0.0, 0.1, 0.2])
        -1.0
    """
    pairs = _pairs(primary, alternate, ("primary", "alternate"))
    return kendall_tau([a for a, _ in pairs], [b for _, b in pairs])


def cluster_driven(dse: Sequence[float | None], class_relevance: Sequence[float | None]) -> float | None:
    """Kendall tau between DSE and its cluster term (class relevance) over a run's
    evaluations: +1 when every change of DSE comes with the same change of its
    cluster term, low or negative when DSE moves through ``dim``. None when undefined.

    Example:
        >>> cluster_driven([0.1, 0.2, 0.3], [0.0, 0.1, 0.2])
        1.0
    """
    pairs = _pairs(dse, class_relevance, ("dse", "class_relevance"))
    return kendall_tau([a for a, _ in pairs], [b for _, b in pairs])


def ranking_verdict(
    dse: Sequence[float | None],
    class_relevance: Sequence[float | None],
    *,
    threshold: float = CLUSTER_THRESHOLD,
    min_evaluations: int = MIN_EVALUATIONS,
) -> RankingVerdict:
    """The verdict on one run from its monitored DSE and DSE's class-relevance term
    (``inter - (intra_image + intra_batch) / 2``) at each evaluation.

    Not reliable when :func:`cluster_driven` > ``threshold``; unknown (None) with fewer
    than ``min_evaluations`` evaluations scored in both or a constant series.

    Example:
        >>> ranking_verdict([0.3, 0.2, float("nan")], [0.1, 0.2, 0.3]).reliable is None
        True
    """
    check_int("min_evaluations", min_evaluations, minimum=2)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [-1, 1], got {threshold!r}")
    count = len(_pairs(dse, class_relevance, ("dse", "class_relevance")))
    if count < min_evaluations:
        return RankingVerdict(None, f"too few scored evaluations to judge the ranking ({count} < {min_evaluations})", None, count)
    share = cluster_driven(dse, class_relevance)
    if share is None:
        return RankingVerdict(None, "DSE or its cluster term is constant: no ranking to judge", None, count)
    if share > threshold:
        reason = (f"not reliable: DSE moves with its cluster term (Kendall tau {share:+.2f} > {threshold:+.2f} over "
                  f"{count} evaluations), which ranked checkpoints against the labels in our study; confirm with a few labels")
        return RankingVerdict(False, reason, share, count)
    reason = f"DSE's changes come mostly from its dim term (tau with the cluster term {share:+.2f} <= {threshold:+.2f} over {count} evaluations)"
    return RankingVerdict(True, reason, share, count)


def _finite(value: object) -> bool:
    return value is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
