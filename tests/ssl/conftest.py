"""Tiny settings shared by the SSL tests: trainable on 2 CPU cores in about a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from dse_tune.ssl.config import PretrainConfig
from tests import tiny_configs

CAMVID = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "camvid"

TINY = {**tiny_configs.TINY_DINO, "decoder_dim": 32, "decoder_num_heads": 2}


def tiny_config(method: str = "dino", **overrides) -> PretrainConfig:
    return PretrainConfig(**{**TINY, "method": method, **overrides}).validate()


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID / "train" / "images").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID.resolve()} (expected ../shared/data/camvid next to the repo)")
    return CAMVID


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine two
    threads per process oversubscribe the cores and make every small op ~10x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
