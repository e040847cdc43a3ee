"""DSE histories with the exact evaluation at which the degradation rule stops.

Shared by every adapter's tests (pure rule, Optuna pruner, Lightning callback, Ray
stopper): each adapter fed ``case.values`` one evaluation at a time, with
``case.rule``, must stop after evaluation ``case.stop_index`` (``None``: never).

    from tests.degradation_cases import DEGRADATION_CASES, case_ids

    @pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
    def test_my_adapter(case): ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dse_tune.degradation import DegradationRule

NAN = math.nan
INF = math.inf


@dataclass(frozen=True)
class DegradationCase:
    name: str
    values: tuple[float, ...]
    stop_index: int | None
    rule: DegradationRule = DegradationRule()
    #: A substring of the stop reason (checked when the case stops).
    reason: str = "degraded"
    #: Why the answer is what it is (read when a case fails).
    why: str = ""


RISE_PEAK_FALL = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65, 0.55)
# A noisy plateau after the rise, then a real fall (used with and without smoothing).
NOISY_THEN_FALL = (0.0, 0.4, 0.8, 1.0, 0.88, 0.87, 0.89, 1.0, 0.99, 0.8, 0.7, 0.6, 0.5)

DEGRADATION_CASES: tuple[DegradationCase, ...] = (
    DegradationCase(
        "rise_peak_fall",
        RISE_PEAK_FALL,
        9,
        why="peak 1.0 at 5, range 1.0; 0.95 is only 5% below; 0.85, 0.75, 0.65 are the "
        "3 evaluations in a row >= 10% below",
    ),
    DegradationCase(
        "rise_peak_fall_patience_1",
        RISE_PEAK_FALL,
        7,
        rule=DegradationRule(patience=1),
        why="the first evaluation >= 10% of the range below the peak is 0.85 at 7",
    ),
    DegradationCase(
        "monotone_rise",
        tuple(0.1 * i for i in range(12)),
        None,
        why="every evaluation is a new peak",
    ),
    DegradationCase(
        "constant",
        (0.7,) * 10,
        None,
        why="zero range: a drop must be strictly positive",
    ),
    DegradationCase(
        "noisy_plateau",
        (0.0, 0.3, 0.6, 0.9, 1.0, 0.98, 1.01, 0.97, 0.99, 1.0, 0.975, 0.985, 0.99),
        None,
        why="noise stays within 4% of the range (0 -> 1.01) below the peak 1.01",
    ),
    DegradationCase(
        "noisy_then_fall_raw",
        NOISY_THEN_FALL,
        6,
        why="raw values: 0.88, 0.87, 0.89 are 3 evaluations >= 10% below the peak 1.0 at 3",
    ),
    DegradationCase(
        "noisy_then_fall_smoothed",
        NOISY_THEN_FALL,
        12,
        rule=DegradationRule(smoothing=3),
        why="the 3-point trailing mean peaks at 0.96 (evaluation 8) and falls 0.93, 0.83, "
        "0.70, 0.60; the last three are >= 10% of the range 0.96 below",
    ),
    DegradationCase(
        "late_recovery_to_new_peak",
        (0.0, 0.25, 0.5, 0.75, 1.0, 0.8, 0.7, 1.2, 1.1, 1.15, 1.0, 0.9, 0.85),
        12,
        why="two evaluations below the first peak, then a new peak 1.2 at 7; 1.1 and 1.15 "
        "are < 10% of the range 1.2 below it; 1.0, 0.9, 0.85 are",
    ),
    DegradationCase(
        "partial_recovery_restarts_patience",
        (0.0, 0.25, 0.5, 0.75, 1.0, 0.8, 0.7, 0.95, 0.8, 0.7, 0.6),
        10,
        why="0.95 at 7 is within 10% of the peak 1.0, so the count restarts at 8",
    ),
    DegradationCase(
        "early_peak_default_warmup",
        (1.0, 0.5, 0.4, 0.3, 0.2, 0.1),
        4,
        why="degraded from evaluation 1 on, but no stop before 5 evaluations",
    ),
    DegradationCase(
        "early_peak_short_warmup",
        (1.0, 0.5, 0.4, 0.3, 0.2, 0.1),
        3,
        rule=DegradationRule(warmup=2),
        why="3 degraded evaluations (1, 2, 3) and warm-up long over",
    ),
    DegradationCase(
        "early_dip_then_rise",
        (0.5, 0.2, 0.3, 0.6, 0.9, 1.0, 1.1),
        None,
        why="the initial dip ends before warm-up; 0.6 at 3 is a new peak",
    ),
    DegradationCase(
        "ray_trial_dip_then_rise",
        (0.4592, 0.3196, 0.3505, 0.4049, 0.4378),
        None,
        why="a real Ray trial: the dip after evaluation 0 is followed by a steady rise; it "
        "was stopped at evaluation 4 while rising (issue 17)",
    ),
    DegradationCase(
        "dip_then_long_rise",
        (0.4592, 0.3196, 0.3505, 0.4049, 0.4378, 0.45, 0.458, 0.459, 0.47, 0.48),
        None,
        why="the same dip, then a rise that passes the first value: a new peak at 8",
    ),
    DegradationCase(
        "deep_dip_then_steady_rise_short_warmup",
        (1.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55),
        None,
        rule=DegradationRule(warmup=2),
        why="every evaluation after the dip is higher than the one before: a steady rise, "
        "though each step is below the 10% threshold and all stay far below the peak",
    ),
    DegradationCase(
        "dip_rise_then_fall",
        (1.0, 0.2, 0.4, 0.6, 0.8, 0.7, 0.6, 0.5),
        7,
        why="the rise ends at 4; 0.7, 0.6, 0.5 fall: from 0.5 the last climb is gone and "
        "the last three are all >= 10% below the peak",
    ),
    DegradationCase(
        "zigzag_decline",
        (0.0, 0.5, 1.0, 0.9, 0.95, 0.8, 0.85, 0.7, 0.75, 0.6, 0.65),
        7,
        why="bounces of 0.05 regain far less than half of the dip: not a recovery; 0.8, 0.85, 0.7 "
        "are 3 evaluations >= 10% of the range below the peak 1.0",
    ),
    DegradationCase(
        "nan_stops_even_in_warmup",
        (0.0, 0.5, 1.0, NAN, 1.1),
        3,
        reason="non-finite DSE",
        why='nan_policy="stop": the first NaN stops the run',
    ),
    DegradationCase(
        "inf_stops",
        (0.0, 0.5, INF),
        2,
        reason="non-finite DSE",
    ),
    DegradationCase(
        "minus_inf_stops",
        (0.0, 0.5, 0.6, -INF),
        3,
        reason="non-finite DSE",
    ),
    DegradationCase(
        "nan_ignored",
        (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, NAN, 0.85, 0.75, 0.65),
        9,
        rule=DegradationRule(nan_policy="ignore"),
        why="NaN at 6 is skipped; 0.85, 0.75, 0.65 are 3 finite evaluations >= 10% below",
    ),
    DegradationCase(
        "nan_only_ignored",
        (NAN, NAN, NAN, NAN, NAN, NAN),
        None,
        rule=DegradationRule(nan_policy="ignore"),
    ),
)


#: A flat DINO-like tail: a total DSE range of 1% of its level (issue 17's DINO run stopped on 0.6%): noise.
FLAT_DINO = (0.3523, 0.3541, 0.3530, 0.3512, 0.3535, 0.3520, 0.3509, 0.3503, 0.3511, 0.3506)


@dataclass(frozen=True)
class NoisyCase:
    """A history with the standard error of each value (``dse_noise``)."""

    name: str
    values: tuple[float, ...]
    noise: tuple[float, ...]
    stop_index: int | None
    rule: DegradationRule = DegradationRule()
    first_untrained: bool = False
    why: str = ""


NOISY_CASES: tuple[NoisyCase, ...] = (
    NoisyCase(
        "flat_dino_within_noise",
        FLAT_DINO,
        (0.002,) * len(FLAT_DINO),
        None,
        why="without noise it stops at 6 (0.3512, 0.3535, 0.3520 are >= 10% of a 0.0038 range below 0.3541); "
        "every drop is below 2 standard errors (0.0057)",
    ),
    NoisyCase(
        "rise_peak_fall_beyond_noise",
        RISE_PEAK_FALL,
        (0.01,) * len(RISE_PEAK_FALL),
        9,
        why="drops of 0.15, 0.25, 0.35 are far beyond 2 standard errors (0.028)",
    ),
    NoisyCase(
        "rise_peak_fall_noise_hides_first_drop",
        RISE_PEAK_FALL,
        (0.06,) * len(RISE_PEAK_FALL),
        10,
        why="the bar is 2 * sqrt(2) * 0.06 = 0.17: 0.85 (drop 0.15) is within the noise, "
        "0.75, 0.65, 0.55 are beyond it",
    ),
    NoisyCase(
        "untrained_first_is_not_the_peak",
        (0.9, 0.5, 0.6, 0.55, 0.5, 0.45, 0.4),
        (0.0,) * 7,
        5,
        first_untrained=True,
        why="step 0 (0.9) is not a peak: the peak is 0.6 at 2 (range 0.6 - 0.45 without step 0); "
        "0.55, 0.5, 0.45 are >= 10% of it below the peak (with the untrained peak it would stop at 4)",
    ),
)


def case_ids(case: DegradationCase | NoisyCase) -> str:
    return case.name
