"""The ranking-reliability verdict (dse_tune.reliability)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from dse_tune.reliability import (
    CLUSTER_THRESHOLD,
    RankingVerdict,
    cluster_driven,
    kendall_tau,
    ranking_agreement,
    ranking_verdict,
)


def test_kendall_tau_matches_scipy_tau_b_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 25))
        x, y = rng.integers(0, 5, n).astype(float), rng.normal(size=n).round(1)
        expected = kendalltau(x, y).statistic
        got = kendall_tau(x, y)
        assert (got is None and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_rejects_nan_and_mismatched_lengths():
    with pytest.raises(ValueError, match="NaN"):
        kendall_tau([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="one length"):
        kendall_tau([1.0, 2.0], [1.0])
    assert kendall_tau([1.0], [2.0]) is None


def test_dse_rising_through_its_dim_term_is_reliable():
    dim = [0.20, 0.25, 0.31, 0.36, 0.42, 0.50]
    relevance = [0.10, 0.11, 0.09, 0.10, 0.08, 0.09]  # flat cluster term
    dse = [d + r for d, r in zip(dim, relevance)]
    verdict = ranking_verdict(dse, relevance)
    assert verdict.reliable is True and verdict.evaluations == 6
    assert verdict.agreement == pytest.approx(kendall_tau(dse, relevance)) and verdict.agreement <= CLUSTER_THRESHOLD
    assert "dim term" in verdict.reason


def test_dse_moving_with_its_cluster_term_is_not_reliable():
    relevance = [0.05, 0.12, 0.20, 0.26, 0.35, 0.41, 0.47]
    dim = [0.30, 0.29, 0.31, 0.30, 0.29, 0.31, 0.30]
    verdict = ranking_verdict([r + d for r, d in zip(relevance, dim)], relevance)
    assert verdict.reliable is False and verdict.agreement > CLUSTER_THRESHOLD
    assert "not reliable" in verdict.reason and "confirm with a few labels" in verdict.reason


def test_threshold_decides_a_middling_share():
    dse = [1, 2, 3, 4, 5, 6]
    relevance = [2, 1, 3, 5, 4, 6]  # tau = 11/15 = 0.73
    assert ranking_verdict(dse, relevance, threshold=0.7).reliable is False
    assert ranking_verdict(dse, relevance, threshold=0.8).reliable is True


def test_unscored_evaluations_are_left_out_and_too_few_give_no_verdict():
    dse = [0.1, float("nan"), 0.3, 0.4, 0.5, 0.6]
    relevance = [0.1, 0.2, None, 0.4, 0.5, 0.6]
    verdict = ranking_verdict(dse, relevance, min_evaluations=4)
    assert verdict.reliable is False and verdict.evaluations == 4
    unknown = ranking_verdict(dse, relevance)  # 4 < the default minimum
    assert unknown == RankingVerdict(None, unknown.reason, None, 4) and "too few" in unknown.reason


def test_a_constant_series_gives_no_verdict():
    verdict = ranking_verdict([0.2] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert verdict.reliable is None and "constant" in verdict.reason


@pytest.mark.parametrize(
    "kwargs, message",
    [({"threshold": 2.0}, "threshold"), ({"min_evaluations": 1}, "min_evaluations"), ({"min_evaluations": True}, "min_evaluations")],
)
def test_bad_settings_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ranking_verdict([1, 2, 3], [1, 2, 3], **kwargs)


def test_series_of_different_lengths_are_an_error():
    with pytest.raises(ValueError, match="dse has 3 evaluations but class_relevance has 2"):
        ranking_verdict([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="primary has 2 evaluations but alternate has 1"):
        ranking_agreement([1, 2], [1])


def test_ranking_agreement_compares_the_evaluations_scored_in_both():
    assert ranking_agreement([0.4, 0.3, None, 0.2], [-0.1, 0.0, 5.0, 0.1]) == -1.0
    assert ranking_agreement([0.1, 0.2, 0.3], [1.0, 3.0, 2.0]) == pytest.approx(1 / 3)
    assert ranking_agreement([0.1, None], [0.2, 0.3]) is None
    assert cluster_driven([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]) == -1.0


def _recorded(name):
    """Monitored DSE and its cluster term of a committed CamVid run (docs/results)."""
    from pathlib import Path

    from dse_tune.runs import read_run

    run = read_run(Path(__file__).resolve().parents[1] / "docs" / "results" / f"dse_history_camvid_{name}.json")
    relevance = [e.components["inter"] - (e.components["intra_image"] + e.components["intra_batch"]) / 2 for e in run.evaluations]
    return [e.dse for e in run.evaluations], relevance


@pytest.mark.parametrize(
    "name, reliable",
    [("mae150_b0", True), ("mae150_b0_seed1", True), ("dino150_b0", False), ("dino150_b0.1", False), ("mae_b0.1", False)],
)
def test_verdicts_on_the_recorded_camvid_runs(name, reliable):
    # tau(DSE, probe mIoU): mae150 +0.76 / +0.74 (ranked well), dino150 -0.02 and -0.74
    # (ranked badly); mae_b0.1 (+0.26, ranked well) is the study's one false alarm.
    verdict = ranking_verdict(*_recorded(name))
    assert verdict.reliable is reliable, verdict.reason
