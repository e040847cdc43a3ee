"""Dense tokens (B, N, d) from any model: timm ViT, timm ConvNet, or a callable.

The model type decides how tokens are read, never the shape of a tensor:

- ``"vit"``: a timm Vision Transformer (``forward_features`` and ``num_prefix_tokens``:
  ``VisionTransformer``, DeiT, EVA): the normed tokens without the CLS and register
  tokens, in raster order, at any image size (:func:`any_input_size`, :func:`crop_to_patches`).
- ``"convnet"``: a timm ConvNet: its last stage (B, C, H, W) as (B, H*W, C) (channels-last
  models that declare ``output_fmt == "NHWC"``, such as Swin, are read as (B, H, W, C)).
- ``"callable"``: any callable ``images -> (B, N, d)``, or an object with a
  ``dense_tokens(images)`` method (the modules of :mod:`dse_tune.ssl`).

Train/eval mode and gradients are the caller's choice (the monitor scores in eval mode
under no_grad; the regularizer needs gradients).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Literal, Union

import torch
from torch import Tensor, nn

Kind = Literal["auto", "vit", "convnet", "callable"]
KINDS = ("auto", "vit", "convnet", "callable")

TokenSource = Union[nn.Module, Callable[[Tensor], Tensor]]


def model_kind(model: TokenSource) -> str:
    """``"vit"``, ``"convnet"`` or ``"callable"``, from the model's type alone.

    Order: an object with a ``dense_tokens`` method is a callable (it knows its own
    tokens); a module with ``num_prefix_tokens`` and ``forward_features`` is a ViT; a
    module with ``forward_features`` is a ConvNet; any other callable is a callable.
    """
    if callable(getattr(model, "dense_tokens", None)):
        return "callable"
    if isinstance(model, nn.Module) and hasattr(model, "forward_features"):
        return "vit" if hasattr(model, "num_prefix_tokens") else "convnet"
    if callable(model):
        return "callable"
    raise TypeError(f"cannot read dense tokens from a {type(model).__name__}: it is neither a module nor a callable")


def dense_tokens(model: TokenSource, images: Tensor, kind: Kind = "auto") -> Tensor:
    """Dense tokens of ``images`` (B, 3, H, W) as a (B, N, d) tensor.

    ``model``: a timm ViT or ConvNet, an object with ``dense_tokens(images)`` or a
    callable returning (B, N, d); ``kind``: ``"auto"`` (:func:`model_kind`) or one of them.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8,
        ...                         num_classes=0, reg_tokens=2, pretrained=False)
        >>> dense_tokens(vit, torch.randn(2, 3, 32, 32)).shape  # CLS + 2 registers dropped
        torch.Size([2, 16, 192])
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    resolved = model_kind(model) if kind == "auto" else kind

    if resolved == "vit":
        num_prefix = getattr(model, "num_prefix_tokens", None)
        if num_prefix is None or not hasattr(model, "forward_features"):
            raise TypeError(
                f"kind='vit' needs a timm ViT with forward_features and num_prefix_tokens; "
                f"{type(model).__name__} has neither"
            )
        images = crop_to_patches(model, images)
        with any_input_size(model, tuple(images.shape[-2:])):
            tokens = model.forward_features(images)
        _check_rank(tokens, 3, f"{type(model).__name__}.forward_features (ViT)")
        tokens = tokens[:, int(num_prefix) :]
    elif resolved == "convnet":
        if not hasattr(model, "forward_features"):
            raise TypeError(f"kind='convnet' needs a timm model with forward_features; got {type(model).__name__}")
        feature_map = model.forward_features(images)
        _check_rank(feature_map, 4, f"{type(model).__name__}.forward_features (ConvNet last stage)")
        # timm declares channels-last outputs (Swin, some hybrids) with output_fmt.
        if str(getattr(model, "output_fmt", "NCHW")) == "NHWC":
            tokens = feature_map.flatten(1, 2)
        else:
            tokens = feature_map.flatten(2).transpose(1, 2)
    else:
        function = getattr(model, "dense_tokens", None)
        function = function if callable(function) else model
        if not callable(function):
            raise TypeError(f"kind='callable' needs a callable, got {type(model).__name__}")
        tokens = function(images)
        _check_rank(tokens, 3, f"{type(model).__name__} (callable)")

    if tokens.shape[0] != images.shape[0]:
        raise ValueError(f"dense tokens have batch size {tokens.shape[0]} but images have {images.shape[0]}")
    return tokens


@contextmanager
def any_input_size(model: nn.Module, size: tuple[int, int]) -> Iterator[nn.Module]:
    """A timm ViT that takes ``size`` (H, W) images for the duration of the block.

    Nothing changes for a model built with ``dynamic_img_size=True`` (every
    :mod:`dse_tune.ssl` backbone) or for images of its own size. Otherwise the model runs
    in timm's ``dynamic_img_size`` mode (position embedding resampled on every forward)
    and is restored afterwards: no parameter is replaced, so an optimizer holding them
    is unaffected (``set_input_size`` would replace them).

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=0)
        >>> with any_input_size(vit, (48, 64)):
        ...     vit.forward_features(torch.randn(1, 3, 48, 64)).shape  # 6 x 8 patches + CLS
        torch.Size([1, 49, 192])
        >>> vit.dynamic_img_size
        False
    """
    embed = getattr(model, "patch_embed", None)
    own = getattr(embed, "img_size", None)
    adaptable = hasattr(model, "dynamic_img_size") and hasattr(embed, "strict_img_size")
    if not adaptable or model.dynamic_img_size or own is None or tuple(own) == tuple(size):
        yield model
        return
    from timm.layers import Format

    saved = (model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt)
    try:
        model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = True, False, False, Format.NHWC
        yield model
    finally:
        model.dynamic_img_size, embed.strict_img_size, embed.flatten, embed.output_fmt = saved


def crop_to_patches(model: nn.Module, images: Tensor) -> Tensor:
    """``images`` centre-cropped so that both sides are multiples of the ViT's patch size
    (timm refuses other sides unless the model pads them)."""
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if patch is None or getattr(embed, "dynamic_img_pad", False):
        return images
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else tuple(patch)
    height, width = images.shape[-2:]
    crop_h, crop_w = height - height % patch_h, width - width % patch_w
    if (crop_h, crop_w) == (height, width):
        return images
    if crop_h < 1 or crop_w < 1:
        raise ValueError(f"images of {height}x{width} pixels are smaller than one {patch_h}x{patch_w} patch")
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return images[..., top : top + crop_h, left : left + crop_w]


def _check_rank(tensor: Tensor, rank: int, source: str) -> None:
    if not isinstance(tensor, Tensor) or tensor.ndim != rank:
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        layout = "(B, N, d)" if rank == 3 else "(B, C, H, W)"
        raise ValueError(f"{source} returned {shape}; expected a {layout} tensor")


@torch.no_grad()
def dense_tokens_batched(model: TokenSource, images: Tensor, kind: Kind = "auto", batch_size: int = 64) -> Tensor:
    """:func:`dense_tokens` under ``no_grad`` in chunks of ``batch_size`` images,
    concatenated on the images' device (bounded memory for large probe sets)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = [dense_tokens(model, images[i : i + batch_size], kind) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks)
