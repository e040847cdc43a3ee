"""The tiny pretraining settings the test suite shares: seconds per run on a 2-core CPU."""

from __future__ import annotations

from typing import Any

#: A 2-block ViT of width 64 on 32 px images (16 patch tokens) with small DINO/iBOT heads.
TINY_VIT: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 8,
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "head_hidden_dim": 64,
    "head_bottleneck_dim": 32,
    "head_output_dim": 128,
    "num_local_crops": 2,
    "warmup_epochs": 0,
    "seed": 0,
}

#: TINY_VIT as a DINO run on a handful of synthetic scenes.
TINY_DINO: dict[str, Any] = {
    **TINY_VIT,
    "method": "dino",
    "batch_size": 8,
    "epochs": 2,
    "synthetic_size": 16,
    "probe_size": 16,
}
