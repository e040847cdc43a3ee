"""What a checkpoint says about its own network, checked against the architecture given.

Shapes cannot tell everything: MoCo v3's ViT-S has 12 heads where DINO's has 6, with every
weight of the same shape. Many checkpoints describe their network, though: DINO, iBOT and
EsViT in ``args.arch`` (``"vit_small"``) and ``args.patch_size``, MAE in ``args.model``
(``"mae_vit_base_patch16"``), MoCo v3 in a top-level ``arch`` (``"vit_small"`` has 12 heads
there), I-JEPA in the ``params-*.yaml`` its training writes next to the checkpoints
(``meta.model_name``, ``mask.patch_size``), Lightning in ``hyper_parameters`` (``embed_dim``,
``depth``, ``num_heads``, ``patch_size``, at the top or under ``config``, as ``dse-tune
pretrain`` writes them). :func:`check_fingerprint` compares what is known with the model and
raises :class:`FingerprintMismatchError` naming both and the preset to use.

Example:
    >>> import timm
    >>> vit = timm.create_model("vit_small_patch16_224", num_classes=0, depth=2)
    >>> model_facts(vit)
    ArchFacts(width=384, depth=2, heads=6, patch=16)
    >>> read_fingerprint({"arch": "vit_small", "state_dict": {}}).facts
    ArchFacts(width=384, depth=12, heads=12, patch=16)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from dse_tune.checkpoints.presets import PRESETS


class ArchFacts(NamedTuple):
    """The sizes that decide a ViT; None where unknown."""

    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch: int | None = None


#: (width, depth, heads) of the official ViT sizes (DINO, iBOT, I-JEPA, MAE share them).
VIT_SIZES = {
    "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
    "large": (1024, 24, 16), "huge": (1280, 32, 16), "giant": (1408, 40, 16),
}
#: MoCo v3's own ViTs (facebookresearch/moco-v3 vits.py:115, 122): 12 heads for both.
MOCOV3_SIZES = {"small": (384, 12, 12), "base": (768, 12, 12)}


class FingerprintMismatchError(ValueError):
    """The checkpoint describes another network than the architecture given."""


@dataclass(frozen=True)
class Fingerprint:
    """A checkpoint's description of its network: ``where`` it was read, the ``facts``,
    and the ``preset`` that builds it (None when there is none)."""

    where: str
    facts: ArchFacts
    preset: str | None


def model_facts(model: Any) -> ArchFacts:
    """Width, depth, heads and patch size of a timm-style ViT (all None for other models)."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "patch_embed"):
        return ArchFacts()
    heads = getattr(getattr(blocks[0], "attn", None), "num_heads", None) if len(blocks) else None
    patch = getattr(model.patch_embed, "patch_size", None)
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    return ArchFacts(int(getattr(model, "embed_dim", 0)) or None, len(blocks), heads, patch)


def _vit_name(name: str, sizes: Mapping[str, tuple[int, int, int]]) -> tuple[str, tuple[int, int, int]] | None:
    match = re.search(r"vit_(tiny|small|base|large|huge|giant)", name)
    if match is None or match.group(1) not in sizes:
        return None
    return match.group(1), sizes[match.group(1)]


def _preset_name(method: str, size: str, patch: int | None) -> str | None:
    name = f"{method}_vit{size[0]}{patch}"
    return name if name in PRESETS else None


def _args(checkpoint: Mapping[str, Any]) -> Any:
    args = checkpoint.get("args")
    return args if args is not None and not isinstance(args, (str, int, float)) else None


def _attr(args: Any, name: str) -> Any:
    return args.get(name) if isinstance(args, Mapping) else getattr(args, name, None)


def read_fingerprint(checkpoint: Mapping[str, Any], path: str | Path | None = None) -> Fingerprint | None:
    """The checkpoint's own description of its ViT (see the module docstring), or None."""
    args = _args(checkpoint)
    if args is not None and isinstance(_attr(args, "arch"), str):  # DINO, iBOT, EsViT
        method = "ibot" if "ibot_loss" in checkpoint else "dino"
        found = _vit_name(_attr(args, "arch"), VIT_SIZES)
        patch = _attr(args, "patch_size")
        if found is not None:
            where = f"args.arch={_attr(args, 'arch')!r}, args.patch_size={patch!r}"
            return Fingerprint(where, ArchFacts(*found[1], patch), _preset_name(method, found[0], patch))
    if args is not None and isinstance(_attr(args, "model"), str):  # MAE
        name = _attr(args, "model")
        found = _vit_name(name, VIT_SIZES)
        patch = re.search(r"patch(\d+)", name)
        patch = int(patch.group(1)) if patch else None
        if found is not None:
            return Fingerprint(f"args.model={name!r}", ArchFacts(*found[1], patch), _preset_name("mae", found[0], patch))
    if isinstance(checkpoint.get("arch"), str):  # MoCo v3
        found = _vit_name(checkpoint["arch"], MOCOV3_SIZES)
        if found is not None:
            return Fingerprint(f"arch={checkpoint['arch']!r}", ArchFacts(*found[1], 16), f"mocov3_vit{found[0][0]}16")
    hyper = checkpoint.get("hyper_parameters")
    if isinstance(hyper, Mapping):
        return _lightning_fingerprint(hyper)
    return _ijepa_fingerprint(path) if path is not None and "target_encoder" in checkpoint else None


def _lightning_fingerprint(hyper: Mapping[str, Any]) -> Fingerprint | None:
    config = hyper.get("config") if isinstance(hyper.get("config"), Mapping) else hyper
    if config.get("backbone", "vit") != "vit":
        return None
    keys = ("embed_dim", "depth", "num_heads", "patch_size")
    values = [config.get(key) if isinstance(config.get(key), int) else None for key in keys]
    if all(value is None for value in values):
        return None
    where = "hyper_parameters " + ", ".join(f"{k}={v}" for k, v in zip(keys, values) if v is not None)
    return Fingerprint(where, ArchFacts(*values), None)


def _ijepa_fingerprint(path: str | Path) -> Fingerprint | None:
    import yaml

    for params in sorted(Path(path).parent.glob("params-*.yaml")):
        try:
            config = yaml.safe_load(params.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        meta, mask = (config or {}).get("meta") or {}, (config or {}).get("mask") or {}
        found = _vit_name(str(meta.get("model_name", "")), VIT_SIZES)
        if found is not None:
            patch = mask.get("patch_size")
            where = f"{params.name}: meta.model_name={meta['model_name']!r}, mask.patch_size={patch!r}"
            return Fingerprint(where, ArchFacts(*found[1], patch), _preset_name("ijepa", found[0], patch))
    return None


def check_fingerprint(checkpoint: Mapping[str, Any], model: Any, *, path: str | Path | None = None,
                      spec: str = "", source: str = "") -> list[str]:
    """Raise :class:`FingerprintMismatchError` when the checkpoint describes another ViT
    than ``model``; return warning lines (a known same-shape trap without a fingerprint)."""
    mine = model_facts(model)
    if mine.width is None:
        return []
    fingerprint = read_fingerprint(checkpoint, path)
    if fingerprint is None:
        if spec.startswith("mocov3") and mine.heads != 12:
            return [f"{source}: MoCo v3's official ViTs have 12 heads, this model has {mine.heads}, and the file "
                    "does not say which (no 'arch'); the shapes cannot tell. If it comes from facebookresearch/moco-v3, "
                    "use --arch mocov3_vits16 / mocov3_vitb16"]
        return []
    names = ("width", "depth", "heads", "patch")
    differ = [f"{n} {theirs} (model: {ours})" for n, theirs, ours in zip(names, fingerprint.facts, mine)
              if theirs is not None and ours is not None and theirs != ours]
    if differ:
        fix = f"use --arch {fingerprint.preset}" if fingerprint.preset else "build the architecture it names"
        raise FingerprintMismatchError(
            f"checkpoint {source} describes its network as {fingerprint.where}, which has {', '.join(differ)}; "
            f"the architecture given is another network: {fix}"
        )
    return []
