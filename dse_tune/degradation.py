"""The stopping rule for dense degradation: a pure function of a DSE history.

Every adapter (the Lightning callback, the Optuna pruner, the Ray Tune stopper) feeds
the same history to :meth:`DegradationRule.decide`, so one sequence of DSE values gives
one decision everywhere. This module imports only the standard library: it is tested
in milliseconds and usable from any training loop.

DSE is "higher is better". An adapter whose metric is minimized negates it first.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from dse_tune.decision import NOISE_Z, RULE_MIN_DROP, RULE_PATIENCE, RULE_WARMUP, as_floats, check_int, difference_noise

__all__ = [
    "NAN_POLICIES", "DegradationDecision", "DegradationRule", "Peak", "decide_with", "finite_or_none", "first_stop_index",
    "peak",
]

#: ``"stop"``: a non-finite DSE stops the run at once (even during warm-up).
#: ``"ignore"``: non-finite values are skipped as if they had not been reported.
NAN_POLICIES = ("stop", "ignore")


@dataclass(frozen=True)
class DegradationDecision:
    """What :meth:`DegradationRule.decide` concluded from a history.

    Attributes:
        stop: True when the run should stop.
        reason: One line for logs, saying why it stops or why it goes on.
        peak_index: Position in the history of the (smoothed) peak; ``None`` while no
            finite value has been seen.
        peak_value: The (smoothed) DSE at the peak; ``None`` likewise.
        evaluations: Length of the history, non-finite entries included.
        current_value: The latest (smoothed) finite DSE, or ``None``.
        relative_drop: ``(peak - current) / (max - min)`` over the (smoothed) finite
            history; ``0.0`` when the range is zero, ``None`` without finite values.
        degraded_evaluations: How many of the latest finite evaluations in a row sit at
            least ``min_drop`` of the range, and beyond the noise, below the peak.
        recovering: True when the latest evaluations rise again (a dip followed by a
            steady rise): such a run is not stopped.
    """

    stop: bool
    reason: str
    peak_index: int | None
    peak_value: float | None
    evaluations: int
    current_value: float | None = None
    relative_drop: float | None = None
    degraded_evaluations: int = 0
    recovering: bool = False


@dataclass(frozen=True)
class DegradationRule:
    """Stop a run once its DSE has fallen clearly and persistently below its peak.

    Given the DSE history ``values`` (evaluation order, higher is better), the run stops
    when all of these hold:

    1. **warm-up**: at least ``warmup`` evaluations have been made (counting finite
       values only under ``nan_policy="ignore"``). Early SSL training is transient; DSE
       often dips or jumps before it rises.
    2. **persistent drop**: the latest ``patience`` evaluations *all* lie at least
       ``min_drop * (max - min)`` below the peak, where the peak, max and min are taken
       over the history seen so far. The run has therefore had at least ``patience``
       evaluations since its peak, and a single recovery above that threshold (a noisy
       spike, or a real partial recovery) restarts the count. A new peak resets it too.
    3. **relative, not absolute**: ``min_drop`` is a fraction of the run's own DSE range,
       because DSE scales differ between models, feature dimensions and probe sets. A
       drop is also required to be strictly positive, so a constant history never stops.
    4. **beyond the noise**: given ``noise`` (one standard error per value, the run
       folder's ``dse_noise``), a drop counts only when it exceeds
       :data:`~dse_tune.decision.NOISE_Z` standard errors of the difference.
    5. **not recovering**: when the run climbed out of its lowest point after the peak by
       at least half of that dip (and more than the drop threshold and the noise), only
       the evaluations after that climb's high count as degraded; a run at that high, or
       whose latest ``max(patience + 1, 3)`` evaluations after the peak rise steadily, is
       recovering and goes on. So a dip followed by a steady rise never stops.

    An untrained first evaluation (``first_untrained=True``: ``global_step == 0``, see
    :func:`dse_tune.decision.is_untrained`) is never the peak while a later value is
    finite: the selector never keeps it either.

    With ``smoothing=k`` the rule reads a trailing moving average over the last ``k``
    finite values (fewer at the start) instead of the raw values; ``peak_value`` and
    ``current_value`` are then smoothed values and ``peak_index`` is the evaluation that
    ends the peak's window.

    Non-finite values (NaN, +-inf) follow ``nan_policy``: ``"stop"`` (default) stops at
    the first one, warm-up or not, with reason ``"non-finite DSE ..."``: NaN features mean
    the run has diverged and will not recover; the peak before it stays the checkpoint to
    keep. ``"ignore"`` drops them; warm-up and patience then count finite evaluations,
    while reported indices still refer to positions in the full history. ``None`` in the
    history is read as NaN.

    Defaults (``warmup=5, patience=3, min_drop=0.1``) assume the paper's protocol of one
    evaluation per checkpoint, every ~10 epochs: no stop in the first 5 evaluations, and
    a stop needs 3 evaluations in a row 10% of the range below the peak. ``patience=3``
    exceeds the selector's candidate window (+-2 evaluations), so a stopped run still
    has the full window after its peak and its best checkpoint stays a clean candidate.

    The rule is stateless: ``decide`` looks at the whole history every time.

    Example:
        >>> rule = DegradationRule(warmup=5, patience=3, min_drop=0.1)
        >>> history = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65]
        >>> decision = rule.decide(history)
        >>> decision.stop, decision.peak_index, decision.peak_value
        (True, 5, 1.0)
        >>> rule.decide(history[:9]).stop  # only 2 evaluations clearly below the peak
        False
        >>> first_stop_index(history, rule)
        9
        >>> rule.decide([0.1, 0.3, float("nan")]).reason
        'non-finite DSE (nan) at evaluation 2'
    """

    warmup: int = RULE_WARMUP
    patience: int = RULE_PATIENCE
    min_drop: float = RULE_MIN_DROP
    smoothing: int | None = None
    nan_policy: str = "stop"

    def __post_init__(self) -> None:
        check_int("warmup", self.warmup, minimum=0)
        check_int("patience", self.patience, minimum=1)
        if (
            isinstance(self.min_drop, bool)
            or not isinstance(self.min_drop, numbers.Real)
            or not 0.0 <= self.min_drop <= 1.0
        ):
            raise ValueError(
                f"min_drop must be a number in [0, 1] (a fraction of the run's DSE range), "
                f"got {self.min_drop!r}"
            )
        if self.smoothing is not None:
            check_int("smoothing", self.smoothing, minimum=1, extra="or None")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {self.nan_policy!r}")

    def decide(
        self,
        values: Sequence[float],
        *,
        noise: Sequence[float | None] | None = None,
        first_untrained: bool = False,
    ) -> DegradationDecision:
        """Decide from the full DSE history (evaluation order) whether to stop now.

        ``noise``: the standard error of each value (None, or None entries: unknown);
        ``first_untrained``: the first evaluation scored the model before any optimizer
        step (it is then never the peak while a later value is finite).
        """
        history = as_floats(values, "values")
        evaluations = len(history)
        if noise is not None and len(noise) != evaluations:
            raise ValueError(f"noise has {len(noise)} entries but values has {evaluations}")
        context = {"noise": noise, "first_untrained": first_untrained}

        positions = [i for i, v in enumerate(history) if math.isfinite(v)]
        first_bad = next((i for i, v in enumerate(history) if not math.isfinite(v)), None)
        if first_bad is not None and self.nan_policy == "stop":
            # Report the peak reached before the divergence: that checkpoint is kept.
            finite_before = positions[: sum(1 for p in positions if p < first_bad)]
            peak = self._summarize(history, finite_before, **context)
            return DegradationDecision(
                stop=True,
                reason=f"non-finite DSE ({history[first_bad]!r}) at evaluation {first_bad}",
                evaluations=evaluations,
                **peak,
            )

        if not positions:
            reason = "no evaluations yet" if evaluations == 0 else "no finite DSE yet"
            return DegradationDecision(False, reason, None, None, evaluations)

        summary = self._summarize(history, positions, **context)
        counted = len(positions)
        degraded = summary["degraded_evaluations"]
        if counted < self.warmup:
            reason = f"warm-up: {counted} of {self.warmup} evaluations"
            return DegradationDecision(False, reason, evaluations=evaluations, **summary)
        if summary["recovering"]:
            reason = (
                f"recovering: DSE {summary['current_value']:.6g} is rising again towards the peak "
                f"{summary['peak_value']:.6g} (evaluation {summary['peak_index']})"
            )
            return DegradationDecision(False, reason, evaluations=evaluations, **summary)
        if degraded < self.patience:
            reason = (
                f"{degraded} of {self.patience} evaluations at least {self.min_drop:.0%} of the "
                f"DSE range{' and beyond the noise' if noise is not None else ''} below the peak "
                f"{summary['peak_value']:.6g} "
                f"(evaluation {summary['peak_index']})"
            )
            return DegradationDecision(False, reason, evaluations=evaluations, **summary)
        reason = (
            f"degraded: DSE {summary['current_value']:.6g} is "
            f"{summary['relative_drop']:.0%} of its range below the peak "
            f"{summary['peak_value']:.6g} (evaluation {summary['peak_index']}), "
            f"{degraded} evaluations in a row at least {self.min_drop:.0%} below"
            f"{' and beyond the noise' if noise is not None else ''}"
        )
        return DegradationDecision(True, reason, evaluations=evaluations, **summary)

    def _summarize(
        self, history: list[float], positions: list[int], *, noise: Sequence | None, first_untrained: bool
    ) -> dict:
        """Peak, current value, relative drop, degraded run length and recovery over ``positions``."""
        if not positions:
            return {"peak_index": None, "peak_value": None}
        series = _trailing_mean([history[i] for i in positions], self.smoothing or 1)
        # An untrained first evaluation is a transient: never the peak while a later one exists.
        eligible = range(1, len(series)) if first_untrained and positions[0] == 0 and len(series) > 1 else range(len(series))
        # First occurrence of the maximum: on a plateau the earliest checkpoint is the peak.
        peak_pos = max(eligible, key=lambda i: (series[i], -i))
        peak, current = series[peak_pos], series[-1]
        spread = peak - min(series[i] for i in eligible)
        threshold = self.min_drop * spread

        def below(i: int) -> bool:  # clearly below the peak: by min_drop of the range and beyond the noise
            drop = peak - series[i]
            bar = NOISE_Z * difference_noise(noise, positions[peak_pos], positions[i])
            return drop > 0.0 and drop >= threshold and drop > bar

        # A dip, then a climb out of it (beyond the threshold and the noise), restarts the
        # count at the climb's high; a run at that high, or rising steadily, is recovering.
        start, recovering = peak_pos + 1, False
        if start < len(series):
            trough = min(range(start, len(series)), key=lambda i: (series[i], i))
            high = max(range(trough, len(series)), key=lambda i: (series[i], -i))
            bar = NOISE_Z * difference_noise(noise, positions[high], positions[trough])
            # A climb is a recovery when it regains at least half of the dip (and beats the
            # threshold and the noise); the bounces of a zig-zag decline are not.
            if series[high] - series[trough] > max(threshold, bar, (peak - series[trough]) / 2):
                start, recovering = high + 1, high == len(series) - 1
            tail = series[peak_pos + 1 :][-max(self.patience + 1, 3) :]  # two rises in a row at least
            recovering = recovering or (len(tail) > 1 and all(b > a for a, b in zip(tail, tail[1:])))
        degraded = 0
        for i in reversed(range(start, len(series))):
            if not below(i):
                break
            degraded += 1
        return {
            "peak_index": positions[peak_pos],
            "peak_value": peak,
            "current_value": current,
            "relative_drop": (peak - current) / spread if spread > 0.0 else 0.0,
            "degraded_evaluations": degraded,
            "recovering": recovering,
        }


@dataclass(frozen=True)
class Peak:
    """The best value of a DSE history: where it is, what it is, or why there is none.

    Attributes:
        index: Position of the highest finite value (the first of ties); ``None`` when
            the history holds no finite value.
        value: That value; ``None`` likewise.
        reason: ``None`` when there is a peak, else why not (``"no evaluations"``,
            ``"no finite DSE in 3 evaluations"``).
        skipped: How many non-finite values (NaN, +-inf, None) were passed over.
    """

    index: int | None
    value: float | None
    reason: str | None = None
    skipped: int = 0

    def __bool__(self) -> bool:
        return self.index is not None


def peak(values: Sequence[float | None]) -> Peak:
    """THE peak of a run: the highest finite DSE and its position (first of ties).

    Every place that needs a run's best value (the monitor, the pretraining summary,
    the Optuna objective, Ray's ``dse_best``, plots) calls this, so a history whose
    first evaluation is NaN has the same finite peak everywhere. Non-finite values are
    skipped; when nothing finite is left the peak is empty and says why.

    Example:
        >>> peak([float("nan"), 0.2, 0.5, 0.5, 0.1])
        Peak(index=2, value=0.5, reason=None, skipped=1)
        >>> peak([float("nan"), None]).reason
        'no finite DSE in 2 evaluations'
        >>> bool(peak([]))
        False
    """
    history = as_floats(values, "values")
    finite = [(value, i) for i, value in enumerate(history) if math.isfinite(value)]
    skipped = len(history) - len(finite)
    if not finite:
        reason = "no evaluations" if not history else f"no finite DSE in {len(history)} evaluations"
        return Peak(None, None, reason, skipped)
    # Highest value; on ties the earliest evaluation (the cheaper, earlier checkpoint).
    value, index = max(finite, key=lambda pair: (pair[0], -pair[1]))
    return Peak(index, value, None, skipped)


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


def decide_with(
    rule: object, values: Sequence[float], *, noise: Sequence[float | None] | None = None, first_untrained: bool = False
) -> DegradationDecision:
    """``rule.decide(values)``, with ``noise`` and ``first_untrained`` when its ``decide``
    takes them (a :class:`DegradationRule` does; a user's own rule may take values only)."""
    if "noise" in inspect.signature(rule.decide).parameters:
        return rule.decide(values, noise=noise, first_untrained=first_untrained)
    return rule.decide(values)


def first_stop_index(
    values: Sequence[float],
    rule: DegradationRule | None = None,
    *,
    noise: Sequence[float | None] | None = None,
    first_untrained: bool = False,
) -> int | None:
    """Index at which ``rule`` first stops when fed ``values`` one at a time, else None.

    This is what every adapter does during training: after evaluation ``i`` it asks
    ``rule.decide(values[: i + 1])`` and stops on the first ``True``.

    Example:
        >>> first_stop_index([1.0, 0.5, 0.4, 0.3, 0.2, 0.1], DegradationRule(warmup=2))
        3
        >>> first_stop_index([0.1, 0.2, 0.3]) is None
        True
    """
    rule = DegradationRule() if rule is None else rule
    history = as_floats(values, "values")
    for end in range(1, len(history) + 1):
        window_noise = None if noise is None else list(noise)[:end]
        if rule.decide(history[:end], noise=window_noise, first_untrained=first_untrained).stop:
            return end - 1
    return None


def _trailing_mean(series: list[float], window: int) -> list[float]:
    if window == 1:
        return series
    out = []
    for i in range(len(series)):
        chunk = series[max(0, i - window + 1) : i + 1]
        out.append(math.fsum(chunk) / len(chunk))
    return out
