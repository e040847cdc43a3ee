from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dse_tune.degradation as degradation
from dse_tune.degradation import DegradationDecision, DegradationRule, first_stop_index, peak
from tests.degradation_cases import DEGRADATION_CASES, FLAT_DINO, NOISY_CASES, RISE_PEAK_FALL, case_ids

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
def test_first_stop_index_matches_case(case):
    assert first_stop_index(case.values, case.rule) == case.stop_index, case.why


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
def test_decide_goes_on_before_the_stop_and_stops_at_it(case):
    last = len(case.values) if case.stop_index is None else case.stop_index
    for end in range(1, last + 1):
        decision = case.rule.decide(case.values[:end])
        assert not decision.stop, (end, decision.reason)
        assert decision.evaluations == end
    if case.stop_index is not None:
        decision = case.rule.decide(case.values[: case.stop_index + 1])
        assert decision.stop
        assert case.reason in decision.reason
        assert decision.evaluations == case.stop_index + 1


@pytest.mark.parametrize("case", DEGRADATION_CASES, ids=case_ids)
@pytest.mark.parametrize("scale, shift", [(1e-3, 0.0), (250.0, -40.0)])
def test_stop_index_is_invariant_to_dse_scale_and_offset(case, scale, shift):
    # min_drop is relative to the run's own DSE range, so an affine change of units
    # (another model, another feature dimension) must not move the stop.
    moved = [scale * v + shift for v in case.values]
    assert first_stop_index(moved, case.rule) == case.stop_index


def test_decision_reports_peak_and_drop():
    decision = DegradationRule().decide(RISE_PEAK_FALL[:10])
    assert decision == DegradationDecision(
        stop=True,
        reason=decision.reason,
        peak_index=5,
        peak_value=1.0,
        evaluations=10,
        current_value=0.65,
        relative_drop=pytest.approx(0.35),
        degraded_evaluations=3,
    )
    assert "peak 1 (evaluation 5)" in decision.reason


def test_plateau_peak_is_its_first_evaluation():
    decision = DegradationRule().decide([0.0, 1.0, 1.0, 1.0, 0.5])
    assert (decision.peak_index, decision.peak_value) == (1, 1.0)


def test_non_finite_stop_reports_the_peak_before_it():
    decision = DegradationRule().decide([0.2, 0.9, 0.4, math.nan, 5.0])
    assert decision.stop
    assert decision.reason == "non-finite DSE (nan) at evaluation 3"
    assert (decision.peak_index, decision.peak_value) == (1, 0.9)
    assert decision.evaluations == 5


def test_ignored_nan_keeps_indices_of_the_full_history():
    decision = DegradationRule(nan_policy="ignore").decide([math.nan, 0.1, math.nan, 0.8])
    assert not decision.stop
    assert (decision.peak_index, decision.evaluations) == (3, 4)
    assert decision.reason.startswith("warm-up: 2 of 5")


def test_smoothing_reads_the_trailing_mean():
    decision = DegradationRule(smoothing=2).decide([0.0, 1.0, 0.0, 0.0])
    # trailing means: 0.0, 0.5, 0.5, 0.0 -> first maximum at evaluation 1
    assert (decision.peak_index, decision.peak_value, decision.current_value) == (1, 0.5, 0.0)


def test_empty_and_all_nan_histories_go_on():
    assert DegradationRule().decide([]) == DegradationDecision(
        False, "no evaluations yet", None, None, 0
    )
    decision = DegradationRule(nan_policy="ignore").decide([math.nan])
    assert (decision.stop, decision.reason) == (False, "no finite DSE yet")


def test_accepts_numpy_and_none():
    values = np.array(RISE_PEAK_FALL, dtype=np.float32)
    assert first_stop_index(values) == 9
    assert DegradationRule().decide([0.1, None]).reason == "non-finite DSE (nan) at evaluation 1"


def test_rejects_non_numbers_naming_the_position():
    with pytest.raises(TypeError, match=r"values\[1\] must be a number.*'high'"):
        DegradationRule().decide([0.1, "high"])
    with pytest.raises(TypeError, match="sequence of numbers"):
        DegradationRule().decide("0.1")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup": -1}, "warmup must be an integer >= 0, got -1"),
        ({"warmup": 2.5}, "warmup must be an integer >= 0, got 2.5"),
        ({"patience": 0}, "patience must be an integer >= 1, got 0"),
        ({"patience": True}, "patience must be an integer >= 1, got True"),
        ({"min_drop": 1.5}, r"min_drop must be a number in \[0, 1\].*got 1.5"),
        ({"min_drop": -0.1}, r"min_drop must be a number in \[0, 1\].*got -0.1"),
        ({"min_drop": "10%"}, r"min_drop must be a number.*got '10%'"),
        ({"smoothing": 0}, "smoothing must be an integer >= 1 or None, got 0"),
        ({"nan_policy": "raise"}, r"nan_policy must be one of \('stop', 'ignore'\), got 'raise'"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DegradationRule(**kwargs)


def test_numpy_integers_are_accepted_and_rule_is_hashable():
    rule = DegradationRule(warmup=np.int64(3), patience=np.int32(2), min_drop=np.float64(0.2))
    assert {rule: "usable as a key"}[rule] == "usable as a key"


def _run_python(program: str) -> None:
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_core_modules_need_only_the_standard_library():
    # Loaded on their own (without the package __init__, which imports the metrics).
    _run_python(
        "import sys, importlib.util\n"
        "import dse_tune.runs, dse_tune.selection\n"
        "for name in ('degradation', 'selection', 'runs'):\n"
        "    spec = importlib.util.spec_from_file_location('_' + name, f'dse_tune/{name}.py')\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    sys.modules[spec.name] = module\n"
        "    spec.loader.exec_module(module)\n"
        "heavy = ('torch', 'numpy', 'lightning', 'ray', 'optuna', 'matplotlib')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )


# ------------------------------------------------------------------------- peak


@pytest.mark.parametrize(
    "values, index, value, skipped",
    [
        ([math.nan, 0.2, 0.5, 0.5, 0.1], 2, 0.5, 1),  # first NaN: the finite peak, first of ties
        ([None, math.inf, 0.3], 2, 0.3, 2),
        ([0.4], 0, 0.4, 0),
    ],
)
def test_peak_ignores_non_finite_values(values, index, value, skipped):
    found = peak(values)
    assert (found.index, found.value, found.skipped, found.reason) == (index, value, skipped, None)


@pytest.mark.parametrize(
    "values, reason", [([], "no evaluations"), ([math.nan, None], "no finite DSE in 2 evaluations")]
)
def test_peak_says_why_there_is_none(values, reason):
    found = peak(values)
    assert not found and found.value is None and found.reason == reason


@pytest.mark.parametrize("case", NOISY_CASES, ids=case_ids)
def test_noisy_case_stops_where_it_says(case):
    found = first_stop_index(case.values, case.rule, noise=case.noise, first_untrained=case.first_untrained)
    assert found == case.stop_index, case.why


def test_flat_dino_tail_stops_without_noise_but_not_with_it():
    # The same history: without its noise the 0.6% range looks like degradation.
    assert first_stop_index(FLAT_DINO) == 6
    assert first_stop_index(FLAT_DINO, noise=[0.002] * len(FLAT_DINO)) is None


def test_untrained_first_evaluation_changes_the_peak():
    values = [0.9, 0.5, 0.6, 0.55, 0.5, 0.45, 0.4]
    assert DegradationRule().decide(values).peak_index == 0
    assert DegradationRule().decide(values, first_untrained=True).peak_index == 2


def test_recovering_run_says_so():
    decision = DegradationRule().decide([0.4592, 0.3196, 0.3505, 0.4049, 0.4378])
    assert not decision.stop and decision.recovering
    assert decision.reason.startswith("recovering")


def test_noise_must_match_the_history():
    with pytest.raises(ValueError, match="noise has 2 entries but values has 3"):
        DegradationRule().decide([0.1, 0.2, 0.3], noise=[0.1, 0.1])


def test_a_stop_says_whether_the_drop_was_weighed_against_noise():
    history = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65]
    bare = DegradationRule().decide(history)
    weighed = DegradationRule().decide(history, noise=[0.01] * len(history))
    assert bare.stop and weighed.stop
    assert bare.reason.endswith("at least 10% below (no noise recorded to weigh the drop against)")
    assert weighed.reason.endswith("at least 10% below and beyond the noise")
    # a noise list that records nothing is no noise: the same stop, said the same way
    assert DegradationRule().decide(history, noise=[None] * len(history)) == bare
