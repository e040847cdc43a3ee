"""A Ray session per test module (module scope: each module that asks starts its own)."""

from __future__ import annotations

import os

import pytest

from tests.sweep_helpers import ray_worker_environment


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray_worker_environment()
    # Tiny trials checkpoint every second; Tune would warn about snapshot frequency.
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    # address="local": a fresh cluster even when another one runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
