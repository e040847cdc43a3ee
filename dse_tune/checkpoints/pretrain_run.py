"""Reading ``dse-tune pretrain``'s own checkpoints without the training code.

A pretraining checkpoint is a Lightning file whose ``hyper_parameters["config"]`` holds the
run's config; the network its DSE monitor scored is one attribute of the LightningModule
(:data:`~dse_tune.checkpoints.branches.DSE_TUNE_SCORED`), a timm model under ``encoder.vit.``
(ViTs, in lightly's masking wrapper) or ``encoder.`` (ConvNets). :func:`load_pretrain_backbone`
rebuilds that timm model from the config (its dense tokens are those the run's history
holds) and loads it weights-only and strictly through :func:`~dse_tune.checkpoints.load.load_backbone`,
without the training code (Lightning, lightly).

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

from dse_tune.checkpoints.branches import DSE_TUNE_SCORED, dse_tune_scored_prefix
from dse_tune.checkpoints.load import load_backbone
from dse_tune.checkpoints.read import CheckpointReadError, read_checkpoint


def pretrain_config(checkpoint: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The run config a ``dse-tune pretrain`` checkpoint stores.

    Raises:
        CheckpointReadError: the file was not written by ``dse-tune pretrain``.
    """
    if dse_tune_scored_prefix(checkpoint) is None:
        raise CheckpointReadError(path, "it has no hyper_parameters['config'] of a dse-tune pretrain run "
                                        "(for other checkpoints give --arch)")
    return dict(checkpoint["hyper_parameters"]["config"])


def build_pretrain_backbone(config: Mapping[str, Any]) -> nn.Module:
    """The timm network of a pretraining run with ``config`` (random weights; ``dse_tune.ssl``
    trains this one too): a ``VisionTransformer`` of the config's sizes for ``backbone="vit"``,
    else the timm model of that name at ``image_size``. ViTs get ``dynamic_img_size=True``:
    DINO/iBOT local crops of another size share the weights. ValueError: not a timm model.
    """
    import timm
    from timm.models.vision_transformer import VisionTransformer

    size = int(config.get("image_size", 32))
    if config.get("backbone", "vit") == "vit":
        return VisionTransformer(img_size=size, patch_size=config["patch_size"], embed_dim=config["embed_dim"],
                                 depth=config["depth"], num_heads=config["num_heads"], num_classes=0,
                                 dynamic_img_size=True)
    try:
        try:
            return timm.create_model(config["backbone"], pretrained=False, num_classes=0, img_size=size,
                                     dynamic_img_size=True)
        except TypeError:  # ConvNets take no img_size; they accept any input size
            return timm.create_model(config["backbone"], pretrained=False, num_classes=0)
    except RuntimeError as error:  # timm: "Unknown model (...)"
        raise ValueError(f"backbone {config['backbone']!r} is not a timm model: {error}") from error


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
