"""Reading other codebases' checkpoints: DINO, iBOT, MAE, MoCo v3, I-JEPA, DenseCL,
SimSiam, SwAV, VICReg, Barlow Twins, BYOL, EsViT, Lightning and plain state dicts.

A tracker strings the pieces together: :func:`collect_checkpoints` and
:func:`order_checkpoints` (a run's files in training order), :func:`read_checkpoint`
(weights-only), :func:`build_architecture` (timm, torchvision, ``module:function`` or one of
the :data:`PRESETS`), :func:`load_backbone` (strict both ways, into a :class:`LoadReport`;
where each method keeps its backbone: :data:`FORMATS`) and :func:`dense_tokens_at`.

Example:
    >>> import os, tempfile, torch
    >>> run = tempfile.mkdtemp()
    >>> kwargs = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    >>> for epoch in (0, 20):  # DINO's layout: teacher/backbone.*, student/module.backbone.*
    ...     weights = build_architecture("vit_tiny_patch16_224", kwargs).state_dict()
    ...     torch.save({"teacher": {f"backbone.{k}": v for k, v in weights.items()},
    ...                 "student": {f"module.backbone.{k}": v for k, v in weights.items()},
    ...                 "epoch": epoch + 1, "dino_loss": {"center": torch.zeros(1, 8)}},
    ...                os.path.join(run, f"checkpoint{epoch:04}.pth"))
    >>> model = build_architecture("vit_tiny_patch16_224", kwargs)
    >>> for item in order_checkpoints(collect_checkpoints(run)):
    ...     report = load_backbone(model, item.path)
    ...     print(item.epoch, report.summary())
    0 dino:teacher: 30/30 weights from 'teacher' (prefix 'backbone.'); nothing ignored
    20 dino:teacher: 30/30 weights from 'teacher' (prefix 'backbone.'); nothing ignored
    >>> dense_tokens_at(model, torch.randn(2, 3, 32, 32), layer=-1).shape
    torch.Size([2, 16, 32])
"""

from __future__ import annotations

from dse_tune.checkpoints.arch import ArchitectureError, TorchvisionResNet, build_architecture
from dse_tune.checkpoints.epochs import Position, epoch_from_checkpoint, parse_epoch, parse_position, stored_position
from dse_tune.checkpoints.files import (
    CheckpointFile,
    CheckpointOrder,
    CheckpointSpecError,
    DuplicateEpochError,
    NoCheckpointsError,
    collect_checkpoints,
    order_checkpoints,
)
from dse_tune.checkpoints.formats import FORMAT_NAMES, FORMATS, CheckpointFormat, Layout
from dse_tune.checkpoints.layers import dense_tokens_at, layer_name, num_layers
from dse_tune.checkpoints.branches import AmbiguousCheckpointError
from dse_tune.checkpoints.fingerprints import FingerprintMismatchError
from dse_tune.checkpoints.load import NOT_FITTING, CheckpointMismatchError, LoadReport, load_backbone, match_formats
from dse_tune.checkpoints.presets import PRESETS, Preset, preset_table
from dse_tune.checkpoints.read import (
    CHECKPOINT_SUFFIXES,
    CheckpointReadError,
    UntrustedCheckpointError,
    is_checkpoint_file,
    read_checkpoint,
)

__all__ = [
    "AmbiguousCheckpointError",
    "ArchitectureError",
    "CHECKPOINT_SUFFIXES",
    "CheckpointFile",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "CheckpointOrder",
    "CheckpointReadError",
    "CheckpointSpecError",
    "DuplicateEpochError",
    "FORMATS",
    "FORMAT_NAMES",
    "FingerprintMismatchError",
    "NOT_FITTING",
    "PRESETS",
    "Preset",
    "Layout",
    "LoadReport",
    "NoCheckpointsError",
    "Position",
    "TorchvisionResNet",
    "UntrustedCheckpointError",
    "build_architecture",
    "collect_checkpoints",
    "dense_tokens_at",
    "epoch_from_checkpoint",
    "is_checkpoint_file",
    "layer_name",
    "load_backbone",
    "match_formats",
    "num_layers",
    "order_checkpoints",
    "parse_epoch",
    "parse_position",
    "preset_table",
    "read_checkpoint",
    "stored_position",
]
