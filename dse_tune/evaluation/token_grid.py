"""Where dense tokens sit on the image: the token grid and bilinear upsampling to pixels.

The grid is ``h x w = N`` in raster order; the linear probe's logits are upsampled with
``align_corners=False``. One place, so that the fit and the evaluation agree on it.

Example:
    >>> infer_grid(12, (90, 120))
    (3, 4)
    >>> rows, cols, index, weight = training_pixels((2, 2), (8, 8))
    >>> rows.tolist(), tuple(index.shape), bool(weight.sum(1).allclose(torch.ones(16)))
    ([1, 3, 5, 7], (16, 4), True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dse_tune.arguments import check_int

__all__ = ["check_grid", "infer_grid", "pixel_logits", "training_pixels"]


def check_grid(grid: Any, num_tokens: int) -> tuple[int, int]:
    """``grid`` as ``(h, w)`` after checking that it holds ``num_tokens`` tokens."""
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)
    ):
        raise ValueError(f"grid must be (h, w) with positive integers, got {grid!r}")
    if grid[0] * grid[1] != num_tokens:
        raise ValueError(f"grid {tuple(grid)} holds {grid[0] * grid[1]} tokens but the tokens have N={num_tokens} per image")
    return int(grid[0]), int(grid[1])


def infer_grid(num_tokens: int, mask_size: tuple[int, int]) -> tuple[int, int]:
    """The token grid (h, w), h * w = N, whose aspect ratio best matches the masks'.

    Square masks and a square N give (sqrt N, sqrt N). Raises when no factorisation of
    N is within 10% of the masks' aspect ratio: pass ``grid=`` explicitly then.
    """
    height, width = mask_size
    target = math.log(height / width)
    pairs = [(h, num_tokens // h) for h in range(1, num_tokens + 1) if num_tokens % h == 0]
    h, w = min(pairs, key=lambda p: (abs(math.log(p[0] / p[1]) - target), p[0]))
    if abs(math.log(h / w) - target) > math.log(1.1):
        raise ValueError(
            f"cannot infer the token grid: no h x w = {num_tokens} tokens matches the masks' aspect "
            f"{height}x{width}; pass grid=(h, w)"
        )
    return h, w


def pixel_logits(tokens: Tensor, weight: Tensor, bias: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Class logits (B, classes, H, W): a linear layer on every token (B, N, d), upsampled
    bilinearly from the token grid to ``size = (H, W)``."""
    num_images = tokens.shape[0]
    token_logits = tokens @ weight.T + bias  # (B, N, C)
    token_logits = token_logits.transpose(1, 2).reshape(num_images, -1, grid[0], grid[1])
    return F.interpolate(token_logits, size=tuple(size), mode="bilinear", align_corners=False)


def training_pixels(grid: tuple[int, int], size: tuple[int, int], stride: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The fixed sub-grid of pixels the training loss is computed on: rows (R,), cols (C,),
    and each pixel's 4 token indices (R*C, 4) and bilinear weights (R*C, 4), exactly those
    of ``F.interpolate(..., mode="bilinear", align_corners=False)`` there.

    Rows and columns ``stride // 2, stride // 2 + stride, ...``; ``stride=None`` puts two
    training pixels per token along each axis (``round(pixels per token / 2)``).
    """
    if stride is not None:
        check_int("pixel_stride", stride, minimum=1)
    strides = [max(1, round(size[axis] / grid[axis] / 2)) if stride is None else stride for axis in range(2)]
    axes = []
    for axis in range(2):
        positions = torch.arange(strides[axis] // 2, size[axis], strides[axis])
        # F.interpolate's source coordinate for align_corners=False, clamped at the edges.
        source = ((positions.double() + 0.5) * grid[axis] / size[axis] - 0.5).clamp(min=0)
        low = source.floor().long().clamp(max=grid[axis] - 1)
        high = (low + 1).clamp(max=grid[axis] - 1)
        axes.append((positions, low, high, (source - low).clamp(max=1).float()))
    (rows, r0, r1, fr), (cols, c0, c1, fc) = axes
    width = grid[1]
    index = torch.stack(
        [r0[:, None] * width + c0, r0[:, None] * width + c1, r1[:, None] * width + c0, r1[:, None] * width + c1], -1
    ).reshape(-1, 4)
    weight = torch.stack(
        [(1 - fr)[:, None] * (1 - fc), (1 - fr)[:, None] * fc, fr[:, None] * (1 - fc), fr[:, None] * fc], -1
    ).reshape(-1, 4)
    return rows, cols, index, weight
