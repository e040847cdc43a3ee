"""Reading ``dse-tune pretrain``'s own checkpoints without the training code.

A pretraining checkpoint is a Lightning file whose ``hyper_parameters["config"]`` holds
the run's config. The network its DSE monitor scored is one attribute of the
LightningModule (:data:`~dse_tune.checkpoints.branches.DSE_TUNE_SCORED`: DINO's and
iBOT's ``teacher_backbone``, MAE's ``backbone``, MoCo v3's ``momentum_backbone``),
a timm model kept under ``encoder.vit.`` (ViTs, inside lightly's masking wrapper) or
``encoder.`` (ConvNets). :func:`load_pretrain_backbone` rebuilds that timm model from the
config, as pretraining built it, and loads it strictly through
:func:`~dse_tune.checkpoints.load.load_backbone`, reading the file weights-only: its
dense tokens are the ones the run's history holds, and nothing here imports the
training code (Lightning, lightly).

Example:
    >>> import torch, tempfile, os, timm
    >>> config = {"method": "mocov3", "backbone": "vit", "image_size": 32, "patch_size": 8,
    ...           "embed_dim": 32, "depth": 2, "num_heads": 2}
    >>> vit = build_pretrain_backbone(config)
    >>> state = {f"momentum_backbone.encoder.vit.{k}": v for k, v in vit.state_dict().items()}
    >>> state.update({f"backbone.encoder.vit.{k}": v + 1 for k, v in vit.state_dict().items()})
    >>> path = os.path.join(tempfile.mkdtemp(), "epoch=0001.ckpt")
    >>> torch.save({"state_dict": state, "hyper_parameters": {"config": config}, "epoch": 1}, path)
    >>> model, recorded = load_pretrain_backbone(path)
    >>> torch.equal(model.pos_embed, vit.pos_embed), recorded["image_size"]
    (True, 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from dse_tune.checkpoints.branches import DSE_TUNE_SCORED
from dse_tune.checkpoints.load import load_backbone
from dse_tune.checkpoints.read import CheckpointReadError, read_checkpoint


def pretrain_config(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The run config a ``dse-tune pretrain`` checkpoint stores.

    Raises:
        CheckpointReadError: the file was not written by ``dse-tune pretrain``.
    """
    hyper = checkpoint.get("hyper_parameters")
    config = hyper.get("config") if isinstance(hyper, Mapping) else None
    if not isinstance(config, Mapping) or config.get("method") not in DSE_TUNE_SCORED:
        raise CheckpointReadError(path, "it has no hyper_parameters['config'] of a dse-tune pretrain run "
                                        "(for other checkpoints give --arch)")
    return dict(config)


def build_pretrain_backbone(config: Mapping[str, Any]) -> nn.Module:
    """The timm network a pretraining run with ``config`` scores (random weights), as
    ``dse_tune.ssl`` builds it: a ``VisionTransformer`` of the config's sizes for
    ``backbone="vit"``, else the timm model of that name at ``image_size``."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    size = int(config.get("image_size", 32))
    if config.get("backbone", "vit") == "vit":
        return VisionTransformer(img_size=size, patch_size=config["patch_size"], embed_dim=config["embed_dim"],
                                 depth=config["depth"], num_heads=config["num_heads"], num_classes=0,
                                 dynamic_img_size=True)
    try:
        return timm.create_model(config["backbone"], pretrained=False, num_classes=0, img_size=size,
                                 dynamic_img_size=True)
    except TypeError:  # ConvNets take no img_size
        return timm.create_model(config["backbone"], pretrained=False, num_classes=0)


def load_pretrain_backbone(
    path: str | Path, map_location: Any = "cpu", *, trust: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, the run config)`` for a ``dse-tune pretrain`` checkpoint.

    Raises:
        CheckpointReadError: unreadable, or not a ``dse-tune pretrain`` checkpoint.
        CheckpointMismatchError: the weights do not fit the recorded config.
    """
    checkpoint = read_checkpoint(path, trust=trust)
    config = pretrain_config(checkpoint, path)
    model = build_pretrain_backbone(config)
    inner = "encoder.vit." if hasattr(model, "blocks") else "encoder."
    load_backbone(model, checkpoint, "lightning", prefix=DSE_TUNE_SCORED[config["method"]] + inner, source=str(path))
    return model.to(map_location).eval(), config
