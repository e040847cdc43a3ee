"""THE decision of a run: its defaults, its first evaluation, its noise, its checkpoint.

One history gives one answer everywhere: the stopping rule (:mod:`dse_tune.degradation`),
the tracker's ``best``, the selector, the validation report, the selection benchmark and
the demo's label check all decide through this module (standard library only), which
holds the defaults once. Each DSE value may carry its standard error (``dse_noise``,
over the probe images); an earlier checkpoint is preferred to the latest, and a
run is stopped, only on a difference beyond :data:`NOISE_Z` standard errors of it. A
ranking verdict of False (:mod:`dse_tune.reliability`) keeps the latest checkpoint.

Example:
    >>> choice = choose_checkpoint([0.1, 0.5, 0.42, 0.45], noise=[0.01] * 4)
    >>> choice.chosen, choice.verdict
    (1, 'reliable')
    >>> choice = choose_checkpoint([0.1, 0.5, 0.42, 0.49], noise=[0.01] * 4)
    >>> choice.chosen, choice.verdict, choice.reason
    (3, 'within_noise', 'no reliable degradation: evaluation 1 beats the latest by 0.01, within 2 standard errors (0.0283); kept the latest')
    >>> choose_checkpoint([0.9, 0.5, 0.6, 0.4], first_untrained=False).chosen
    0
    >>> choose_checkpoint([0.9, 0.5, 0.6, 0.4], first_untrained=True).chosen
    2
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dse_tune.arguments import check_int
from dse_tune.reliability import RankingVerdict, ranking_verdict

__all__ = [
    "CANDIDATE_TOP",
    "CANDIDATE_WINDOW",
    "KEPT_LATEST",
    "NOISE_Z",
    "RULE_MIN_DROP",
    "RULE_PATIENCE",
    "RULE_WARMUP",
    "VERDICTS",
    "Choice",
    "candidate_indices",
    "choose_checkpoint",
    "difference_noise",
    "finite_or_none",
    "is_untrained",
    "run_choice",
    "scatter_noise",
    "standardized_series",
]

#: The paper's candidate rule: local maxima within +-2 evaluations, the top 3 of them.
CANDIDATE_WINDOW = 2
CANDIDATE_TOP = 3
#: The stopping rule's defaults (see :class:`dse_tune.degradation.DegradationRule`).
RULE_WARMUP = 5
RULE_PATIENCE = 3
RULE_MIN_DROP = 0.1
#: A difference counts when it exceeds this many standard errors of the difference
#: (two values a and b: ``NOISE_Z * sqrt(noise_a**2 + noise_b**2)``); 2 is the usual
#: ~95% bar, not fitted to any benchmark.
NOISE_Z = 2.0

#: How reliable a choice is: ``"reliable"`` (the chosen checkpoint beats the latest
#: beyond the noise, or is the latest with nothing better), ``"within_noise"`` (an earlier
#: checkpoint was better only within the noise: the latest is kept), ``"not_reliable"``
#: (the ranking verdict says DSE does not rank this run's checkpoints: the latest is
#: kept), ``"noise_unknown"`` (an earlier checkpoint beats the latest, but the history
#: records no noise to say whether beyond it: DSE's pick is kept, unconfirmed, as the
#: stopping rule's peak is), ``"none"`` (nothing to choose).
VERDICTS = ("reliable", "within_noise", "not_reliable", "noise_unknown", "none")
#: The verdicts that keep the latest checkpoint over DSE's own pick.
KEPT_LATEST = ("within_noise", "not_reliable")


def is_untrained(evaluation: object) -> bool:
    """Whether ``evaluation`` (anything with ``global_step``) scored a model before any
    optimizer step: ``global_step == 0``. Unknown steps are trained, and so is "epoch 0"
    after a full epoch (DINO's ``checkpoint0000.pth``).

    Example:
        >>> from types import SimpleNamespace as E
        >>> is_untrained(E(global_step=0, epoch=None)), is_untrained(E(global_step=None, epoch=0))
        (True, False)
    """
    step = getattr(evaluation, "global_step", None)
    return step is not None and not isinstance(step, bool) and step == 0


def candidate_indices(
    values: Sequence[float | None], window: int = CANDIDATE_WINDOW, top: int | None = CANDIDATE_TOP
) -> list[int]:
    """Indices of the local maxima of ``values``, best first: the paper's candidate set.

    ``i`` is a candidate when ``values[i]`` is the maximum of ``values[i - window : i +
    window + 1]`` (clipped at both ends; equal values all count as maxima). The ``top``
    highest are returned (None: all), ties by earlier index. Non-finite values (NaN,
    +-inf, None) are never candidates and are ignored as neighbours.

    Example:
        >>> candidate_indices([1.0, 3.0, 2.0, 2.5, 2.0, 1.0, 3.0], window=1, top=None)
        [1, 6, 3]
        >>> candidate_indices([float("nan"), 1.0, 1.0], window=2)
        [1, 2]
    """
    check_int("window", window, minimum=0)
    if top is not None:
        check_int("top", top, minimum=1, extra="or None")
    series = as_floats(values, "values")
    found = []
    for i, value in enumerate(series):
        if not math.isfinite(value):
            continue
        neighbours = series[max(0, i - window) : i + window + 1]
        if all(not math.isfinite(other) or other <= value for other in neighbours):
            found.append(i)
    found.sort(key=lambda i: (-series[i], i))
    return found if top is None else found[:top]


def difference_noise(noise: Sequence[float | None] | None, a: int, b: int) -> float:
    """Standard error of ``values[a] - values[b]`` (independent noises); 0 when unknown."""
    if noise is None:
        return 0.0
    a_noise, b_noise = (finite_or_none(noise[i]) or 0.0 for i in (a, b))
    return math.sqrt(a_noise**2 + b_noise**2)


def scatter_noise(values: Sequence[float | None]) -> float | None:
    """A run's noise estimated from its own scatter, for histories that record none.

    The second differences ``v[i-1] - 2 v[i] + v[i+1]`` cancel any locally linear trend;
    for independent noise of standard error s their standard deviation is ``sqrt(6) * s``,
    which their median absolute value / 0.6745 estimates robustly. Real changes between
    checkpoints add to the scatter: this over-estimates the noise (erring towards keeping
    the latest checkpoint). None with fewer than 5 finite values.

    Example:
        >>> round(scatter_noise([0.0, 0.11, 0.19, 0.31, 0.4, 0.49, 0.61]), 4)
        0.0182
    """
    finite = [v for v in as_floats(values, "values") if math.isfinite(v)]
    if len(finite) < 5:
        return None
    second = [abs(finite[i - 1] - 2 * finite[i] + finite[i + 1]) for i in range(1, len(finite) - 1)]
    return statistics.median(second) / 0.6745 / math.sqrt(6)


@dataclass(frozen=True)
class Choice:
    """The checkpoint a run's history leads to, and how sure that is.

    Positions in the history: ``candidates`` best first, ``chosen``, the ``latest`` finite
    one and the ``best`` candidate (what DSE alone prefers), None when no value is finite;
    ``verdict``: one of :data:`VERDICTS`; ``reason``: one line, what was chosen and why.
    """

    candidates: tuple[int, ...]
    chosen: int | None
    latest: int | None
    best: int | None
    verdict: str
    reason: str


def choose_checkpoint(
    values: Sequence[float | None],
    *,
    noise: Sequence[float | None] | None = None,
    first_untrained: bool = False,
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    ranking_reliable: bool | None = None,
    ranking_reason: str = "",
    z: float = NOISE_Z,
) -> Choice:
    """THE label-free choice of a checkpoint from a run's DSE history.

    The candidates are :func:`candidate_indices` of ``values`` (an untrained first
    evaluation competes only when nothing later qualifies). DSE prefers the best
    candidate; the choice keeps the latest evaluation instead when the ranking is not
    reliable (``ranking_reliable=False``) or when the best beats the latest by no more
    than ``z`` standard errors of their difference (``noise``: one standard error per
    value, None where unknown: then a strictly positive difference keeps DSE's pick with
    the verdict ``"noise_unknown"``).
    """
    series = as_floats(values, "values")
    finite = [i for i, v in enumerate(series) if math.isfinite(v)]
    candidates = _candidates(series, first_untrained, window, top)
    if not candidates:
        return Choice((), None, None, None, "none", "no finite DSE")
    later = [i for i in finite if not (first_untrained and i == 0)]
    latest = (later or finite)[-1]
    best = candidates[0]
    if ranking_reliable is False:
        # A verdict's reason may already say it in full (dse_tune.reliability's does): not twice.
        if "confirm with a few labels" in ranking_reason:
            said = ranking_reason
        else:
            said = "not reliable: confirm with a few labels" + (f" ({ranking_reason})" if ranking_reason else "")
        reason = f"{said}; kept the latest (evaluation {latest})"
        return Choice(tuple(candidates), latest, latest, best, "not_reliable", reason)
    if best == latest or series[best] <= series[latest]:
        return Choice(tuple(candidates), latest, latest, best, "reliable", "the latest evaluation has the highest DSE")
    margin = series[best] - series[latest]
    if noise is None or all(finite_or_none(noise[i]) is None for i in (best, latest)):
        # Nothing to weigh the drop against: keep DSE's pick (the stopping rule's peak
        # too) but say so; the run's own scatter is a hint, not a measurement.
        scatter = scatter_noise(series)
        hint = "" if scatter is None else (
            f" (the run's own scatter puts {z:g} standard errors at {z * math.sqrt(2) * scatter:.3g})")
        reason = (f"degraded: evaluation {best} beats the latest ({latest}) by {margin:.3g}; no noise recorded, "
                  f"so not known whether beyond it{hint}")
        return Choice(tuple(candidates), best, latest, best, "noise_unknown", reason)
    bar = z * difference_noise(noise, best, latest)
    if margin <= bar:
        reason = (
            f"no reliable degradation: evaluation {best} beats the latest by {margin:.3g}, within "
            f"{z:g} standard errors ({bar:.3g}); kept the latest"
        )
        return Choice(tuple(candidates), latest, latest, best, "within_noise", reason)
    reason = f"degraded: evaluation {best} beats the latest ({latest}) by {margin:.3g}, beyond {z:g} standard errors ({bar:.3g})"
    return Choice(tuple(candidates), best, latest, best, "reliable", reason)


def run_choice(
    run: Any,
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    *,
    scores: Sequence[float] | None = None,
    ranking: tuple[bool | None, str] | None = None,
    skip_untrained: bool = True,
    use_noise: bool = True,
) -> Choice:
    """:func:`choose_checkpoint` of a :class:`~dse_tune.runs.RunRecord`: its DSE (or
    ``scores``), recorded noise (unless ``use_noise=False``), untrained first evaluation
    (unless ``skip_untrained=False``) and ranking verdict (``ranking``, given, wins)."""
    if ranking is None:
        ranking = ranking_of(run)
    evaluations = run.evaluations
    return choose_checkpoint(
        [e.dse for e in evaluations] if scores is None else scores,
        noise=run.dse_noise if use_noise else None,
        first_untrained=skip_untrained and bool(evaluations) and is_untrained(evaluations[0]),
        window=window,
        top=top,
        ranking_reliable=ranking[0],
        ranking_reason=ranking[1],
    )


def class_relevance(components: Any) -> float | None:
    """DSE's cluster term ``inter - (intra_image + intra_batch) / 2`` from an evaluation's
    components, or None when one is missing or not finite."""
    try:
        values = [float(components[name]) for name in ("inter", "intra_image", "intra_batch")]
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return values[0] - (values[1] + values[2]) / 2


def ranking_verdict_of(evaluations: Sequence[Any]) -> RankingVerdict:
    """:func:`dse_tune.reliability.ranking_verdict` of a run's evaluations (anything with
    ``dse``, ``components`` and ``global_step``); an untrained first evaluation is left
    out, as everywhere in the decision."""
    trained = list(evaluations[1:] if evaluations and is_untrained(evaluations[0]) else evaluations)
    return ranking_verdict([e.dse for e in trained], [class_relevance(e.components) for e in trained])


def ranking_of(run: Any) -> tuple[bool | None, str]:
    """A run's ranking verdict ``(reliable, reason)``: the recorded one (``ranking_reliable``)
    when there is one, else judged now from its history (older run folders, other tools)."""
    recorded = getattr(run, "ranking_reliable", None)
    if recorded is not None:
        return recorded, getattr(run, "ranking_reason", None) or ""
    verdict = ranking_verdict_of(run.evaluations)
    return verdict.reliable, verdict.reason


def _candidates(series: list[float], first_untrained: bool, window: int, top: int | None) -> list[int]:
    # An untrained first evaluation is a transient, not a checkpoint to keep: it competes
    # only when nothing later qualifies.
    if first_untrained and len(series) > 1:
        later = candidate_indices([math.nan, *series[1:]], window=window, top=top)
        if later:
            return later
    return candidate_indices(series, window=window, top=top)


def standardized_series(relevance: Sequence[float], dim: Sequence[float], lam: float = 1.0) -> list[float]:
    """THE run-standardised DSE: ``R_t / std(R) + lam * dim_t / std(dim)`` (population
    deviations over the finite entries; a zero deviation leaves its term unscaled), NaN
    where either input is not finite. :func:`dse_tune.metrics.standardize_dse` and the
    selector's ``score="standardized"`` both compute it here.

    Example:
        >>> standardized_series([1.0, 3.0], [0.5, 0.5])
        [1.5, 3.5]
    """
    pairs = [(float(r), float(d)) for r, d in zip(relevance, dim, strict=True)]
    finite = [(r, d) for r, d in pairs if math.isfinite(r) and math.isfinite(d)]
    scale_r = (statistics.pstdev([r for r, _ in finite]) if finite else 0.0) or 1.0
    scale_d = (statistics.pstdev([d for _, d in finite]) if finite else 0.0) or 1.0
    return [
        r / scale_r + lam * d / scale_d if math.isfinite(r) and math.isfinite(d) else math.nan for r, d in pairs
    ]


def as_floats(values: Sequence[float | None], name: str) -> list[float]:
    """``values`` as floats (None -> NaN); a TypeError names ``name[i]`` otherwise."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = []
    for i, value in enumerate(values):
        try:
            out.append(math.nan if value is None else float(value))
        except (TypeError, ValueError):
            raise TypeError(f"{name}[{i}] must be a number, got {value!r}") from None
    return out


def finite_or_none(value: object) -> float | None:
    """``value`` as a finite float, else None (None, booleans, NaN, +-inf, text).

    Example:
        >>> finite_or_none("0.5"), finite_or_none(float("nan")), finite_or_none(True)
        (0.5, None, None)
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
