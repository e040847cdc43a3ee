"""Run folders on disk for tests: the format of dse_tune.runs, written by hand."""

from __future__ import annotations

import json
from pathlib import Path

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
