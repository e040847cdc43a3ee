"""Fixtures shared across the test packages."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine two
    threads per process oversubscribe the cores and make every small op ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
