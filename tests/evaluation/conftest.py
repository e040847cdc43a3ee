"""Fixtures of the evaluation tests: one tiny sweep and one tiny run, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation.tiny_runs import pretrain_sweep, pretrain_validation_run


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Path:
    """Two real runs (beta 0 and 0.1) pretrained on synthetic scenes, 3 epochs each."""
    return pretrain_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A real 3-epoch DINO run with 3 evaluations and their checkpoints."""
    return pretrain_validation_run(tmp_path_factory.mktemp("runs"))
