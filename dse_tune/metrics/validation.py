"""Input checks shared by every metric: shapes, layouts, dtypes and values, checked at the door."""

from __future__ import annotations

import torch
from torch import Tensor

from dse_tune.arguments import check_int

LAYOUTS = ("tokens", "feature_map")
#: The dimensions of each layout of features (``embeddings``: the image-level baselines').
SHAPES = {"tokens": ("B", "N", "d"), "feature_map": ("B", "d", "H", "W"), "embeddings": ("n", "d")}


class ConstantFeaturesError(ValueError):
    """Every token is the same vector: DSE, a ratio to the tokens' spread, is undefined.

    A ValueError, so callers that treat it as bad input still can; a training monitor
    catches this class to record a collapsed run instead of crashing."""


def as_token_tensor(features: object, layout: str, *, argument: str = "features") -> Tensor:
    """Dense features as a checked float tensor (B, N, d) (:func:`as_float_tensor`):
    ``layout="feature_map"`` (B, d, H, W) is flattened; the layout is never guessed."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    tensor = as_float_tensor(features, layout, argument)
    return tensor if layout == "tokens" else tensor.flatten(2).transpose(1, 2)


def as_float_tensor(features: object, layout: str, argument: str = "features") -> Tensor:
    """``features`` checked: a finite floating-point tensor of the ``layout``'s shape
    (:data:`SHAPES`), half precision promoted to float32 (float64 stays)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"{argument} must be a floating-point tensor, got dtype {features.dtype}")
    if features.ndim != len(SHAPES[layout]):
        hint = " (a (B, d, H, W) feature map needs layout='feature_map')" if features.ndim == 4 else ""
        raise ValueError(
            f"{argument} with layout={layout!r} must have shape ({', '.join(SHAPES[layout])}), "
            f"got {tuple(features.shape)}{hint}"
        )
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    check_finite(features, argument)
    return features


def check_finite(values: Tensor, argument: str) -> None:
    """Raise a ValueError that counts the NaN and Inf entries, if any."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        nan_count = int(torch.isnan(values).sum())
        inf_count = int((~finite).sum()) - nan_count
        raise ValueError(
            f"{argument} contains {nan_count} NaN and {inf_count} infinite value(s) "
            f"out of {values.numel()}; DSE is undefined for them"
        )


def resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """A private generator from ``seed`` (default 0), or the caller's own generator.

    Metrics never draw from torch's global RNG, so calling them inside a training loop
    leaves the loop's random stream untouched.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    private = torch.Generator(device="cpu")
    private.manual_seed(0 if seed is None else seed)
    return private


def check_positive_int(value: object, argument: str, minimum: int = 1) -> int:
    """``value`` when :func:`dse_tune.arguments.check_int` accepts it (its error otherwise)."""
    check_int(argument, value, minimum=minimum)
    return value
