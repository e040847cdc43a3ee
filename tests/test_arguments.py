"""The one integer test behind every argument check."""

from __future__ import annotations

import numpy as np
import pytest

from dse_tune.arguments import check_int, is_int_at_least
from dse_tune.metrics.validation import check_positive_int
from dse_tune.reliability import ranking_verdict
from dse_tune.search_space_schema import integer_at_least


@pytest.mark.parametrize("value", [2, np.int64(2), np.int32(5)])
def test_integers_of_any_kind_pass(value):
    assert is_int_at_least(value, 2)
    check_int("k", value, minimum=2)
    assert check_positive_int(value, "k") == value
    assert integer_at_least(2)(value) is None


@pytest.mark.parametrize("value", [True, 1, 2.0, "2", None, np.float64(3.0)])
def test_bools_floats_text_and_small_values_fail_everywhere_with_one_message(value):
    assert not is_int_at_least(value, 2)
    with pytest.raises(ValueError, match=r"^k must be an integer >= 2 \(or None\), got "):
        check_int("k", value, minimum=2, extra="(or None)")
    with pytest.raises(ValueError, match=r"^k must be an integer >= 2, got "):
        check_positive_int(value, "k", minimum=2)
    assert integer_at_least(2)(value).startswith("must be an integer >= 2, got ")
    with pytest.raises(ValueError, match="min_evaluations must be an integer >= 2"):
        ranking_verdict([0.1] * 6, [0.1] * 6, min_evaluations=value)
