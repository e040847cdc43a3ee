"""examples/ray_own_trainable.py: a user's own training function on Tune, stopped by
dse_tune's stopper, whose run folder then says it was stopped and why."""

from __future__ import annotations

import runpy

import optuna
import pytest

from tests.sweep_helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_a_users_trainable_stopped_by_the_stopper_says_so_in_its_run_folder(ray_session, tmp_path):
    example = runpy.run_path(str(REPO_ROOT / "examples" / "ray_own_trainable.py"), run_name="example")
    # A pruner that stops every trial at its evaluation 2, whatever its DSE does.
    stops_at_two = optuna.pruners.ThresholdPruner(lower=1.0e9, n_warmup_steps=2)
    verdicts = example["main"](tmp_path / "sweep", epochs=5, pruner=stops_at_two)

    assert len(verdicts) == 2
    for verdict in verdicts.values():
        assert verdict["evaluations"] == 3  # the run folder ends at the evaluation that stopped it
        assert verdict["stopped_early"]
        assert verdict["stop_reason"] == "stopped by the sweep's pruner: ThresholdPruner pruned at evaluation 2"
