"""Tiny sweep settings shared by the Ray, sweep and demo tests (seconds per trial on a CPU)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The example search spaces of the source tree.
SPACES = REPO_ROOT / "search_spaces"

#: A 1-block MAE on 64 synthetic 32 px scenes: ~0.3 s per epoch on one core.
TINY_PRETRAIN: dict[str, Any] = {
    "method": "mae",
    "data": "synthetic",
    "synthetic_size": 64,
    "image_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "batch_size": 32,
    "probe_size": 16,
    "eval_every_n_epochs": 1,
    "warmup_epochs": 0,
    "epochs": 3,
}


def write_space(path: Path, *, pretrain: dict[str, Any] | None = None, **sections: Any) -> Path:
    """Write a search space YAML: TINY_PRETRAIN updated by ``pretrain``, plus ``sections``."""
    data = {"name": path.stem, "pretrain": {**TINY_PRETRAIN, **(pretrain or {})}}
    data.setdefault("resources", {"cpu": 1})
    data.update(sections)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ray_worker_environment() -> None:
    """Let Ray workers import ``tests`` (callbacks defined in test modules travel by name)."""
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
