"""Dense tokens from a chosen layer, for per-layer DSE (which block is healthiest).

``layer``: ``-1`` (default) is the last block with the final norm, exactly
:func:`dse_tune.features.dense_tokens` (what the paper's code scores); ``i`` in
``0 .. num_layers(model) - 1`` is the output of ViT block ``i`` (prefix tokens dropped) with
the model's final norm applied, as the paper's per-layer code does (``get_embeddings`` in
EldercatSAM/SSL-Degradation), or raw with ``norm=False`` (with the norm, the last index
equals ``-1``); for a ConvNet, stage ``i`` as timm's ``feature_info`` lists it (a ResNet: 0
the stem, 1-4 ``layer1``-``layer4``); ``-k`` for ``k >= 2`` is ``num_layers(model) - k``.
timm models are read through ``forward_intermediates`` (timm >= 1.0), other ViTs through a
forward hook on ``model.blocks[i]``; other callables only have ``layer=-1``. Like
:mod:`dse_tune.features`, this does not switch eval mode or disable gradients.

Example:
    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3,
    ...                         embed_dim=32, num_heads=2, num_classes=0)
    >>> num_layers(vit)
    3
    >>> images = torch.randn(2, 3, 32, 32)
    >>> dense_tokens_at(vit, images, 0).shape  # block 0 + final norm, CLS token dropped
    torch.Size([2, 16, 32])
    >>> torch.equal(dense_tokens_at(vit, images, -1), vit.forward_features(images)[:, 1:])
    True
    >>> torch.allclose(dense_tokens_at(vit, images, 2), dense_tokens_at(vit, images, -1), atol=1e-6)
    True
    >>> torch.allclose(dense_tokens_at(vit, images, 2, norm=False), dense_tokens_at(vit, images, -1))
    False
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from dse_tune.features import TokenSource, crop_to_patches, any_input_size, dense_tokens, model_kind


def num_layers(model: TokenSource) -> int:
    """How many layers :func:`dense_tokens_at` can index: a ViT's blocks, a ConvNet's stages.

    Raises:
        TypeError: a callable without blocks or ``feature_info`` (only ``layer=-1`` works).
    """
    blocks = getattr(model, "blocks", None)
    if hasattr(model, "num_prefix_tokens") and isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        return len(blocks)
    feature_info = getattr(model, "feature_info", None)
    if feature_info is not None and hasattr(model, "forward_intermediates"):
        return len(feature_info)
    raise TypeError(
        f"{type(model).__name__} has neither ViT blocks nor timm-style feature_info with forward_intermediates; "
        "only layer=-1 (its own dense tokens) is available"
    )


def resolve_layer(model: TokenSource, layer: int) -> int:
    """``layer`` as a non-negative index, or -1 (see the module docstring for the rules)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer must be an int, got {type(layer).__name__}")
    if layer == -1:
        return -1
    count = num_layers(model)
    index = count + layer if layer < 0 else layer
    if not 0 <= index < count:
        raise ValueError(
            f"layer {layer} is out of range for {type(model).__name__} with {count} layers: "
            f"use -1 (last, with the final norm) or -{count}..{count - 1}"
        )
    return index


def dense_tokens_at(model: TokenSource, images: Tensor, layer: int = -1, norm: bool = True) -> Tensor:
    """Dense tokens (B, N, d) of ``images`` at ``layer`` (see the module docstring);
    ``norm``: a ViT block's output with the final norm (the paper's), or raw.

    Raises:
        ValueError: ``layer`` out of range.
        TypeError: ``layer != -1`` on a model without layers to pick.
    """
    index = resolve_layer(model, layer)
    if index == -1:
        return dense_tokens(model, images)
    if hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks"):
        images = crop_to_patches(model, images)  # the same probe regime as the last layer's tokens
        with any_input_size(model, tuple(images.shape[-2:])):
            return _vit_block_tokens(model, images, index, norm)
    feature_map = model.forward_intermediates(images, indices=[index], intermediates_only=True)[0]
    if str(getattr(model, "output_fmt", "NCHW")) == "NHWC":
        return feature_map.flatten(1, 2)
    return feature_map.flatten(2).transpose(1, 2)


def _vit_block_tokens(model: Any, images: Tensor, index: int, norm: bool) -> Tensor:
    if hasattr(model, "forward_intermediates"):
        return model.forward_intermediates(images, indices=[index], norm=norm, output_fmt="NLC",
                                           intermediates_only=True)[0]
    outputs: list[Tensor] = []
    handle = model.blocks[index].register_forward_hook(lambda module, inputs, output: outputs.append(output))
    try:
        model.forward_features(images)
    finally:
        handle.remove()
    tokens = model.norm(outputs[0]) if norm and hasattr(model, "norm") else outputs[0]
    return tokens[:, int(model.num_prefix_tokens) :]


def layer_name(model: TokenSource, layer: int, norm: bool = True) -> str:
    """A short label for reports: ``"last+norm"``, ``"block 3+norm"``, ``"block 3"`` (raw),
    ``"stage 2 (layer2)"``.

    >>> import timm
    >>> layer_name(timm.create_model("resnet18", num_classes=0), 2)
    'stage 2 (layer2)'
    """
    index = resolve_layer(model, layer)
    if index == -1:
        return "last+norm" if model_kind(model) == "vit" else "last"
    if hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks"):
        return f"block {index}+norm" if norm else f"block {index}"
    info = model.feature_info[index]
    module = info.get("module") if isinstance(info, dict) else None
    return f"stage {index} ({module})" if module else f"stage {index}"
