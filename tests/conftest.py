"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.run_folders import write_run


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine two
    threads per process oversubscribe the cores and make every small op ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def beta_sweep(tmp_path) -> Path:
    """Three betas. The largest has the highest training-probe DSE (it optimizes DSE)
    but the worst held-out rescored DSE; beta=0.1 is best held out, at its second
    candidate (epoch 60), not at its monitored peak (epoch 20)."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "trial_0_beta=0", [0.10, 0.30, 0.50, 0.45, 0.40, 0.35], 0.0)
    write_run(
        sweep / "trial_1_beta=0.1",
        [0.12, 0.40, 0.62, 0.50, 0.48, 0.55, 0.60, 0.52, 0.45],
        0.1,
        stopped_early=True,
        stop_reason="degraded",
    )
    # nested like a Ray Tune trial directory
    write_run(sweep / "ray" / "trial_2_beta=1", [0.2, 0.7, 0.9, 0.95, 0.93, 0.9], 1.0)
    return sweep


CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


@pytest.fixture
def camvid_root() -> Path:
    """The real CamVid frames of ../shared (never shipped with the package); skips where absent."""
    if not (CAMVID / "train" / "images").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID.resolve()} (expected ../shared/data/camvid next to the repo)")
    return CAMVID
