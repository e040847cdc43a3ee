"""Run-level standardisation of DSE over checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dse_tune
from dse_tune import standardize_dse

HISTORY = {
    "inter": [1.0, 1.2, 1.5, 1.4],
    "intra_image": [2.0, 1.8, 1.6, 1.8],
    "intra_batch": [1.0, 1.0, 0.8, 1.0],
    "dim": [0.50, 0.52, 0.51, 0.40],
}


def test_matches_the_formula():
    result = standardize_dse(HISTORY, lam=0.5)
    relevance = np.array(HISTORY["inter"]) - (np.array(HISTORY["intra_image"]) + np.array(HISTORY["intra_batch"])) / 2
    dim = np.array(HISTORY["dim"])
    assert result.raw == pytest.approx(relevance + 0.5 * dim)
    assert result.standardized == pytest.approx(relevance / relevance.std() + 0.5 * dim / dim.std())
    assert result.class_relevance_std == pytest.approx(relevance.std())


def test_accepts_a_list_of_results_or_mappings():
    rows = [dict(zip(HISTORY, values)) for values in zip(*HISTORY.values())]
    assert standardize_dse(rows).standardized == pytest.approx(standardize_dse(HISTORY).standardized)
    results = [dse_tune.dse(torch.randn(8, 30, 8) * (i + 1), seed=0) for i in range(3)]
    standardized = standardize_dse(results)
    assert len(standardized.raw) == 3
    assert standardized.raw == pytest.approx([r.score for r in results], rel=1e-6)


def test_a_single_checkpoint_is_left_unscaled():
    result = standardize_dse({name: values[:1] for name, values in HISTORY.items()})
    assert result.standardized == pytest.approx(result.raw)


@pytest.mark.parametrize(
    "history, match",
    [
        ({"inter": [1.0], "intra_image": [1.0], "intra_batch": [1.0]}, "no component 'dim'"),
        ({**HISTORY, "dim": [0.5]}, "differ in length"),
        ({name: [] for name in HISTORY}, "empty"),
        ({**HISTORY, "inter": [1.0, float("nan"), 1.0, 1.0]}, "'inter' holds 1 non-finite"),
        ([3.0], "history\\[0\\] must be a DSEResult"),
    ],
)
def test_bad_histories_are_refused(history, match):
    with pytest.raises((KeyError, ValueError, TypeError), match=match):
        standardize_dse(history)
