"""The stopping rule for dense degradation: a pure function of a DSE history.

Every adapter (the Lightning callback, the Optuna pruner, the Ray Tune stopper) feeds the
same history to :meth:`DegradationRule.decide`: one sequence of DSE values, one decision
everywhere. Standard library only. DSE is "higher is better": an adapter whose metric is
minimized negates it first.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from dse_tune.arguments import check_int
from dse_tune.decision import (
    NOISE_Z, RULE_MIN_DROP, RULE_PATIENCE, RULE_WARMUP, as_floats, difference_noise, finite_or_none,
)

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
        reason: one line for logs: why it stops, or why it goes on.
        peak_index, peak_value: where the (smoothed) peak is and its DSE; None while no
            value is finite. ``current_value``: the latest (smoothed) finite DSE.
        evaluations: length of the history, non-finite entries included.
        relative_drop: ``(peak - current) / (max - min)`` over the (smoothed) finite
            history; 0.0 when the range is zero, None without finite values.
        degraded_evaluations: how many of the latest finite evaluations in a row sit at
            least ``min_drop`` of the range, and beyond the noise, below the peak.
        recovering: the latest evaluations rise again (a dip, then a steady rise).
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

    Stateless: :meth:`decide` reads the whole history (evaluation order, higher is better)
    every time and stops when all hold (``docs/selection.md``, section 1, says why):

    1. **warm-up**: at least ``warmup`` evaluations made (finite ones only under
       ``nan_policy="ignore"``);
    2. **persistent drop**: the latest ``patience`` evaluations *all* lie at least
       ``min_drop * (max - min)`` below the peak (peak, max and min over the history so
       far): one evaluation back above that line, or a new peak, restarts the count;
    3. **relative**: ``min_drop`` is a fraction of the run's own DSE range (DSE scales
       differ between models and probe sets), and a drop must be strictly positive;
    4. **beyond the noise**: given ``noise`` (one standard error per value), a drop counts
       only beyond :data:`~dse_tune.decision.NOISE_Z` standard errors of the difference;
    5. **not recovering**: after a climb out of the post-peak low that regains half the
       dip (and beats the threshold and the noise), only evaluations after the climb's
       high count; a run at that high, or whose latest ``max(patience + 1, 3)``
       evaluations after the peak rise steadily, goes on.

    An untrained first evaluation (``first_untrained=True``: ``global_step == 0``) is never
    the peak while a later value is finite. ``smoothing=k`` reads a trailing mean over the
    last ``k`` finite values; ``peak_index`` is then the evaluation that ends the peak's
    window. Non-finite values (NaN, +-inf, None) follow ``nan_policy``: ``"stop"`` (the
    default) stops at the first one, warm-up or not (a diverged run does not recover; its
    earlier peak is kept); ``"ignore"`` skips them, indices still counting the full
    history. The defaults suit one evaluation every ~10 epochs; ``patience=3`` exceeds
    the candidate window (+-2), so a stopped run's peak stays a clean candidate.

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
        min_drop = self.min_drop
        if isinstance(min_drop, bool) or not isinstance(min_drop, numbers.Real) or not 0 <= min_drop <= 1:
            raise ValueError(f"min_drop must be a number in [0, 1] (a fraction of the run's DSE range), "
                             f"got {min_drop!r}")
        if self.smoothing is not None:
            check_int("smoothing", self.smoothing, minimum=1, extra="or None")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {self.nan_policy!r}")

    def decide(
        self, values: Sequence[float], *, noise: Sequence[float | None] | None = None, first_untrained: bool = False
    ) -> DegradationDecision:
        """Decide from the full DSE history (evaluation order) whether to stop now.

        ``noise``: each value's standard error (None, or None entries: unknown);
        ``first_untrained``: the first evaluation was made before any optimizer step."""
        history = as_floats(values, "values")
        evaluations = len(history)
        if noise is not None and len(noise) != evaluations:
            raise ValueError(f"noise has {len(noise)} entries but values has {evaluations}")
        if noise is not None and all(finite_or_none(n) is None for n in noise):
            noise = None  # nothing recorded: said as such, as the selector says it
        context = {"noise": noise, "first_untrained": first_untrained}

        positions = [i for i, v in enumerate(history) if math.isfinite(v)]
        first_bad = next((i for i, v in enumerate(history) if not math.isfinite(v)), None)
        if first_bad is not None and self.nan_policy == "stop":
            # Report the peak reached before the divergence: that checkpoint is kept.
            finite_before = positions[: sum(1 for p in positions if p < first_bad)]
            peak = self._summarize(history, finite_before, **context)
            reason = f"non-finite DSE ({history[first_bad]!r}) at evaluation {first_bad}"
            return DegradationDecision(True, reason, evaluations=evaluations, **peak)

        if not positions:
            reason = "no evaluations yet" if evaluations == 0 else "no finite DSE yet"
            return DegradationDecision(False, reason, None, None, evaluations)

        summary = self._summarize(history, positions, **context)
        counted, degraded, current = len(positions), summary["degraded_evaluations"], summary["current_value"]
        at_peak = f"the peak {summary['peak_value']:.6g} (evaluation {summary['peak_index']})"
        beyond = " and beyond the noise" if noise is not None else ""
        stop = False
        if counted < self.warmup:
            reason = f"warm-up: {counted} of {self.warmup} evaluations"
        elif summary["recovering"]:
            reason = f"recovering: DSE {current:.6g} is rising again towards {at_peak}"
        elif degraded < self.patience:
            reason = (f"{degraded} of {self.patience} evaluations at least {self.min_drop:.0%} of the DSE "
                      f"range{beyond} below {at_peak}")
        else:
            stop = True
            reason = (f"degraded: DSE {current:.6g} is {summary['relative_drop']:.0%} of its range below {at_peak}, "
                      f"{degraded} evaluations in a row at least {self.min_drop:.0%} below"
                      f"{beyond or ' (no noise recorded to weigh the drop against)'}")
        return DegradationDecision(stop, reason, evaluations=evaluations, **summary)

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

    ``index``/``value``: the highest finite value (first of ties) and where, None when
    there is none; ``reason``: then why (``"no finite DSE in 3 evaluations"``);
    ``skipped``: how many non-finite values (NaN, +-inf, None) were passed over.
    """

    index: int | None
    value: float | None
    reason: str | None = None
    skipped: int = 0

    def __bool__(self) -> bool:
        return self.index is not None


def peak(values: Sequence[float | None]) -> Peak:
    """THE peak of a run: the highest finite DSE and its position (first of ties).

    Every place that needs a run's best value (the monitor, the Optuna objective, Ray's
    ``dse_best``, plots) calls this: non-finite values are skipped the same way everywhere.

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
    return [math.fsum(series[max(0, i - window + 1) : i + 1]) / min(i + 1, window) for i in range(len(series))]
