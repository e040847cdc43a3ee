"""Which checkpoint keys belong to the backbone, and what architecture a backbone's shapes fit.

:func:`backbone_namespace` names what a backbone's keys start with: the model's own top-level
names plus those any ViT or ResNet backbone may have (``fc_norm``, ``norm`` where the model
moved it away, register tokens, extra stages); a checkpoint key there with no place in the
model is a mismatch, not a head to ignore. :func:`fit_hint` reads a ViT backbone's shapes
(width and patch size from ``patch_embed.proj.weight``, depth from the highest block index)
and says which preset or kwargs would fit; heads cannot be read from shapes.

Example:
    >>> import torch
    >>> state = {"cls_token": torch.zeros(1, 1, 384), "pos_embed": torch.zeros(1, 197, 384),
    ...          "patch_embed.proj.weight": torch.zeros(384, 3, 16, 16),
    ...          "blocks.11.norm1.weight": torch.zeros(384)}
    >>> print(fit_hint(state))
    ; the checkpoint's backbone is a ViT of width 384, depth 12, patch 16, img_size 224, with a class token: presets of that shape: dino_vits16, ibot_vits16, mae_vits16, mocov3_vits16 (12 heads), or --arch-kwargs '{"embed_dim": 384, "depth": 12, "patch_size": 16, "img_size": 224}' (the number of heads cannot be read from shapes)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dse_tune.checkpoints.fingerprints import VIT_SIZES
from dse_tune.checkpoints.presets import PRESETS

#: Top-level names any ViT / ResNet / Swin backbone may have besides the model's own.
BACKBONE_NAMES = frozenset({
    "cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed", "blocks", "norm", "fc_norm", "norm_pre",
    "attn_pool", "conv1", "bn1", "layers", "stages", "stem",
})
_STAGE = re.compile(r"layer\d+$")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def backbone_namespace(model_keys: Iterable[str]) -> frozenset[str]:
    """The first names of the model's keys, plus :data:`BACKBONE_NAMES`."""
    return frozenset(key.split(".", 1)[0] for key in model_keys) | BACKBONE_NAMES


def in_namespace(key: str, namespace: frozenset[str]) -> bool:
    """Whether a checkpoint key (model-relative) belongs to the backbone."""
    first = key.split(".", 1)[0]
    return first in namespace or _STAGE.match(first) is not None


def _find(state: Mapping[str, Any], suffix: str) -> Any:
    for key, value in state.items():
        if (key == suffix or key.endswith("." + suffix)) and hasattr(value, "shape"):
            return value
    return None


def vit_shape(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Width, depth, patch, img_size and class token of a ViT state dict (any prefix), or None."""
    proj = _find(state, "patch_embed.proj.weight")
    blocks = [int(m.group(1)) for key in state for m in [_BLOCK.search(key)] if m]
    if proj is None or not blocks or proj.dim() != 4:
        return None
    cls, pos = _find(state, "cls_token"), _find(state, "pos_embed")
    shape = {"embed_dim": int(proj.shape[0]), "depth": max(blocks) + 1, "patch_size": int(proj.shape[-1])}
    if pos is not None and pos.dim() == 3:
        grid = math.isqrt(int(pos.shape[1]) - (1 if cls is not None else 0))
        if grid * grid == int(pos.shape[1]) - (1 if cls is not None else 0):
            shape["img_size"] = grid * shape["patch_size"]
    shape["class_token"] = cls is not None
    return shape


def _preset_shape(name: str) -> tuple[int, int, int, bool] | None:
    """(width, depth, patch, class token) of a ViT preset, from timm's config of its model."""
    preset = PRESETS[name]
    match = re.match(r"vit_(\w+?)_patch(\d+)_", preset.timm_name)
    if match is None or match.group(1) not in VIT_SIZES:
        return None
    width, depth, _ = VIT_SIZES[match.group(1)]
    patch = int(preset.kwargs.get("patch_size", match.group(2)))
    return width, depth, patch, bool(preset.kwargs.get("class_token", True))


def fit_hint(state: Mapping[str, Any], model_shapes: Mapping[str, tuple[int, ...]] | None = None) -> str:
    """``"; the checkpoint's backbone is a ViT of ...: presets ..., or --arch-kwargs ..."``,
    or ``""`` when the shapes do not describe a ViT; special cases first (I-JEPA's final
    norm in timm's ``fc_norm``)."""
    if model_shapes is not None and "fc_norm.weight" in model_shapes and "fc_norm.weight" not in state \
            and "norm.weight" in state:
        return ("; the model keeps its final norm in fc_norm (timm's global_pool='avg'), the checkpoint in norm: "
                "use an ijepa_* preset or add \"fc_norm\": false to --arch-kwargs")
    shape = vit_shape(state)
    if shape is None:
        return ""
    key = (shape["embed_dim"], shape["depth"], shape["patch_size"], shape["class_token"])
    presets = [name + (" (12 heads)" if PRESETS[name].kwargs.get("num_heads") == 12 else "")
               for name in PRESETS if _preset_shape(name) == key]
    kwargs = {k: shape[k] for k in ("embed_dim", "depth", "patch_size", "img_size") if k in shape}
    if not shape["class_token"]:
        kwargs.update(class_token=False, global_pool="avg", fc_norm=False)
    token = "with a class token" if shape["class_token"] else "without a class token"
    size = ", ".join(f"{k if k != 'embed_dim' else 'width'} {v}" for k, v in kwargs.items() if k in shape
                     and k != "class_token").replace("patch_size", "patch")
    found = f"presets of that shape: {', '.join(presets)}, or " if presets else ""
    return (f"; the checkpoint's backbone is a ViT of {size}, {token}: {found}--arch-kwargs '{json.dumps(kwargs)}' "
            "(the number of heads cannot be read from shapes)")
