"""The ``cuda`` marker: tests that need a CUDA device, skipped (with the reason) without one.

Run them alone with ``pytest -m cuda`` (benchmarks/gpu/run.sh does, on a GPU machine).
"""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
