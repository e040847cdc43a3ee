"""Tiny settings shared by the SSL tests: trainable on 2 CPU cores in about a second."""

from __future__ import annotations

import pytest

from dse_tune.ssl.config import PretrainConfig
from tests import tiny_configs

TINY = {**tiny_configs.TINY_DINO, "decoder_dim": 32, "decoder_num_heads": 2}


def tiny_config(method: str = "dino", **overrides) -> PretrainConfig:
    return PretrainConfig(**{**TINY, "method": method, **overrides}).validate()


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_torch_thread):
    """Every test of this package trains tiny models: one torch thread (see tests/conftest.py)."""
