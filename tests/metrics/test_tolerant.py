from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import dse_tune.metrics.tolerant as tolerant
from dse_tune import dse, score_tokens


def test_a_healthy_input_gives_the_metric_unchanged():
    tokens = torch.randn(16, 16, 8, generator=torch.Generator().manual_seed(0))
    scored = score_tokens(tokens, seed=3)
    expected = dse(tokens, seed=3)
    assert scored.ok and scored.failure is None and scored.result == expected
    assert scored.as_dict() == {
        "dse": expected.score,
        "inter": expected.inter,
        "intra_image": expected.intra_image,
        "intra_batch": expected.intra_batch,
        "dim": expected.dim,
        "failure": None,
    }


@pytest.mark.parametrize(
    "tokens, reason",
    [
        (torch.full((16, 16, 8), math.inf), "dense features contain NaN or infinite values"),
        (torch.ones(16, 16, 8), "collapsed features"),
    ],
)
def test_sick_features_give_nan_and_the_reason(tokens, reason):
    scored = score_tokens(tokens, seed=0)
    assert not scored.ok and scored.failure.startswith(reason)
    assert all(math.isnan(v) for k, v in scored.as_dict().items() if k != "failure")


def test_a_custom_scorer_that_returns_a_non_finite_score_is_a_failure():
    scorer = lambda tokens: SimpleNamespace(score=math.nan, inter=1.0, intra_image=0.0, intra_batch=0.0, dim=0.0)  # noqa: E731
    assert score_tokens(torch.randn(4, 4, 4), scorer=scorer).failure == "non-finite DSE (nan)"


def test_setup_errors_still_raise():
    with pytest.raises(ValueError):
        score_tokens(torch.randn(2, 2, 4), seed=0)  # too few tokens for the clusters
