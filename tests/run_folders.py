"""Run folders on disk for tests: the format of dse_tune.runs, written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_run(
    directory: Path,
    dse: list[float | None],
    beta: float | None = 0.0,
    *,
    every: int = 10,
    stopped_early: bool = False,
    stop_reason: str | None = None,
    make_checkpoints: bool = True,
) -> Path:
    """A RUN_DIR in the format the Lightning callback writes."""
    directory.mkdir(parents=True, exist_ok=True)
    evaluations = []
    for i, value in enumerate(dse):
        epoch = every * i
        checkpoint = f"checkpoints/epoch={epoch:04d}.ckpt"
        if make_checkpoints:
            (directory / checkpoint).parent.mkdir(exist_ok=True)
            (directory / checkpoint).write_bytes(b"weights")
        evaluations.append(
            {
                "index": i,
                "epoch": epoch,
                "global_step": 50 * epoch,
                "dse": value,
                "inter": 1.0,
                "intra_image": 0.5,
                "intra_batch": 0.25,
                "dim": 0.5,
                "checkpoint": checkpoint,
                "seconds": 2.5,
            }
        )
    config = {"lr": 1e-3} if beta is None else {"lr": 1e-3, "dse_beta": beta}
    history = {
        "config": config,
        "evaluations": evaluations,
        "stopped_early": stopped_early,
        "stop_reason": stop_reason,
    }
    (directory / "dse_history.json").write_text(json.dumps(history))
    return directory


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
