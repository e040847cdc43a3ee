"""Architecture presets of the official self-supervised models: ``--arch mocov3_vits16``.

Shapes alone cannot tell some networks apart: MoCo v3's ViT-S has 12 attention heads where
timm's ``vit_small_patch16_224`` (and DINO's) has 6; I-JEPA's ViT has no class token and keeps
its final norm in ``norm``, not timm's ``fc_norm``. A preset is the timm model plus the kwargs
that make it the official network, checked against the official model definition (its
``source`` file and line, listed in ``docs/tracking.md``).

Every ViT preset here has ``qkv_bias=True``, MLP ratio 4 (I-JEPA's giant: 48/11),
LayerNorm with eps 1e-6 before attention and MLP and a final LayerNorm ``norm`` (timm's
defaults), and a learned or fixed position table stored in the checkpoint.

Example:
    >>> preset = PRESETS["mocov3_vits16"]
    >>> preset.timm_name, preset.kwargs["num_heads"], preset.default_format
    ('vit_small_patch16_224', 12, 'mocov3:momentum_encoder')
    >>> resolve_preset("ijepa_vith14", {"img_size": 112})[1]["fc_norm"]
    False
    >>> resolve_preset("vit_small_patch16_224", None) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One official architecture: the timm model, its kwargs and where that was read."""

    name: str
    method: str
    timm_name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    default_format: str = ""
    note: str = ""


# I-JEPA: no class token, the final norm kept in `norm` (not timm's avg-pool fc_norm).
_IJEPA = {"class_token": False, "global_pool": "avg", "fc_norm": False}
_DINO = "facebookresearch/dino vision_transformer.py"
_IBOT = "bytedance/ibot models/vision_transformer.py"
_MAE = "facebookresearch/mae models_mae.py"
_MOCO = "facebookresearch/moco-v3 vits.py"
_IJEPA_SRC = "facebookresearch/ijepa src/models/vision_transformer.py"


def _preset(name: str, method: str, timm_name: str, source: str, fmt: str, note: str = "", **kwargs: Any) -> Preset:
    return Preset(name, method, timm_name, dict(kwargs), source, fmt, note)


_PRESET_LIST = (
    _preset("dino_vits16", "DINO", "vit_small_patch16_224", f"{_DINO}:243 (vit_small)", "dino:teacher"),
    _preset("dino_vits8", "DINO", "vit_small_patch8_224", f"{_DINO}:243 (vit_small, --patch_size 8)", "dino:teacher"),
    _preset("dino_vitb16", "DINO", "vit_base_patch16_224", f"{_DINO}:250 (vit_base)", "dino:teacher"),
    _preset("dino_vitb8", "DINO", "vit_base_patch8_224", f"{_DINO}:250 (vit_base, --patch_size 8)", "dino:teacher"),
    _preset("ibot_vits16", "iBOT", "vit_small_patch16_224", f"{_IBOT}:277 (vit_small)", "ibot:teacher"),
    _preset("ibot_vitb16", "iBOT", "vit_base_patch16_224", f"{_IBOT}:283 (vit_base)", "ibot:teacher"),
    _preset("ibot_vitl16", "iBOT", "vit_large_patch16_224", f"{_IBOT}:289 (vit_large)", "ibot:teacher"),
    _preset("mae_vits16", "MAE (the DSE paper's small model)", "vit_small_patch16_224",
            "EldercatSAM/SSL-Degradation models/mae/models_mae.py:332 (mae_vit_small_patch16_dec384d8b)", "mae"),
    _preset("mae_vitb16", "MAE", "vit_base_patch16_224", f"{_MAE}:223 (mae_vit_base_patch16_dec512d8b)", "mae"),
    _preset("mae_vitl16", "MAE", "vit_large_patch16_224", f"{_MAE}:231 (mae_vit_large_patch16_dec512d8b)", "mae"),
    _preset("mae_vith14", "MAE", "vit_huge_patch14_224", f"{_MAE}:239 (mae_vit_huge_patch14_dec512d8b)", "mae"),
    _preset("mocov3_vits16", "MoCo v3", "vit_small_patch16_224", f"{_MOCO}:115 (vit_small: 12 heads)",
            "mocov3:momentum_encoder", "12 heads, not timm's 6", num_heads=12),
    _preset("mocov3_vitb16", "MoCo v3", "vit_base_patch16_224", f"{_MOCO}:122 (vit_base)", "mocov3:momentum_encoder"),
    _preset("ijepa_vits16", "I-JEPA", "vit_small_patch16_224", f"{_IJEPA_SRC}:458 (vit_small)", "ijepa:encoder",
            **_IJEPA),
    _preset("ijepa_vitb16", "I-JEPA", "vit_base_patch16_224", f"{_IJEPA_SRC}:465 (vit_base; the DSE paper's deit_base)",
            "ijepa:encoder", **_IJEPA),
    _preset("ijepa_vitl16", "I-JEPA", "vit_large_patch16_224", f"{_IJEPA_SRC}:472 (vit_large)", "ijepa:encoder",
            **_IJEPA),
    _preset("ijepa_vith14", "I-JEPA", "vit_huge_patch14_224", f"{_IJEPA_SRC}:479 (vit_huge, patch 14)",
            "ijepa:encoder", **_IJEPA),
    _preset("ijepa_vith16", "I-JEPA", "vit_huge_patch14_224", f"{_IJEPA_SRC}:479 (vit_huge, patch 16)",
            "ijepa:encoder", patch_size=16, **_IJEPA),
    _preset("ijepa_vitg16", "I-JEPA", "vit_giant_patch14_224", f"{_IJEPA_SRC}:486 (vit_giant, patch 16)",
            "ijepa:encoder", patch_size=16, **_IJEPA),
    _preset("resnet50", "ResNet methods (SwAV, VICReg, Barlow Twins, DenseCL, SimSiam, MoCo v3, BYOL, ReSA, MEC)",
            "resnet50", "pytorch/vision torchvision/models/resnet.py (resnet50: Bottleneck, [3, 4, 6, 3])", "auto",
            "timm's resnet50 has torchvision's weight names; dense tokens: layer4"),
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in _PRESET_LIST}


def resolve_preset(arch: str, arch_kwargs: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """``(timm name, kwargs)`` for a preset name (the user's kwargs win, e.g. ``img_size``);
    None for any other ``arch``."""
    preset = PRESETS.get(arch)
    if preset is None:
        return None
    return preset.timm_name, {**preset.kwargs, **dict(arch_kwargs or {})}


def preset_table() -> str:
    """The presets, one a line, for ``dse-tune track --list-archs``.

    >>> print(preset_table().splitlines()[0])
    preset          method   timm model + kwargs                                         default --format
    """
    lines = [f"{'preset':<15} {'method':<8} {'timm model + kwargs':<59} default --format"]
    for preset in _PRESET_LIST:
        kwargs = ", ".join(f"{key}={value}" for key, value in preset.kwargs.items())
        model = preset.timm_name + (f" ({kwargs})" if kwargs else "")
        method = preset.method if len(preset.method) <= 8 else preset.method.split(" ")[0]
        lines.append(f"{preset.name:<15} {method:<8} {model:<59} {preset.default_format}")
        lines.append(f"{'':<15} source: {preset.source}" + (f"; {preset.note}" if preset.note else ""))
    return "\n".join(lines)
