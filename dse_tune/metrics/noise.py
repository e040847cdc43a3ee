"""The noise of a DSE value over its probe images: a leave-one-group-out jackknife.

DSE averages per-image terms (local spreads, the scale) and per-group terms (distances to
other centroids, global spreads, per group of ``group_size`` images). Leaving one group
out and recombining those terms gives G pseudo-values of the class-relevance part; their
jackknife standard error is its probe-image noise. No clustering is repeated.

M_dim (the effective rank of the images' tokens at each position) does not split over
groups; its share is the standard error over the shuffled token positions it averages.
The k-means seed's own noise is not included (a second seed would double the cost); on
trained checkpoints it adds 1-8% (docs/selection.md, ``benchmarks/bench_noise.py --seed-share``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["jackknife_noise"]


def jackknife_noise(parts: dict[str, Tensor], group_size: int) -> float | None:
    """Standard error of the DSE score from the per-group terms of
    :func:`dse_tune.metrics.dse_metric.dse_components` (``groups=True``); None with
    fewer than 2 groups of images.

    Example:
        >>> import torch
        >>> from dse_tune import dse
        >>> result = dse(torch.randn(32, 16, 8), seed=0, noise=True)
        >>> 0 < result.noise < 0.1
        True
        >>> dse(torch.randn(8, 16, 8), seed=0, noise=True).noise is None  # one group
        True
    """
    group_inter = parts["group_inter"].double()
    groups = group_inter.shape[0]
    if groups < 2:
        return None
    per_image_intra = parts["per_image_intra"].double()
    per_image_scale = parts["per_image_scale"].double()
    spread_sum = parts["group_spread_sum"].double()
    spread_count = parts["group_spread_count"].double()
    images = per_image_intra.shape[0]
    # Image i belongs to the global group i // group_size (the last group may be smaller).
    membership = torch.arange(images) // group_size
    image_sums = torch.zeros(groups, dtype=torch.float64).index_add_(0, membership, per_image_intra)
    scale_sums = torch.zeros(groups, dtype=torch.float64).index_add_(0, membership, per_image_scale)
    image_counts = torch.bincount(membership, minlength=groups).double()

    kept_images = images - image_counts
    inter = (group_inter.sum() - group_inter) / (groups - 1)
    intra_image = (per_image_intra.sum() - image_sums) / kept_images
    intra_batch = (spread_sum.sum() - spread_sum) / (spread_count.sum() - spread_count).clamp(min=1)
    scale = (per_image_scale.sum() - scale_sums) / kept_images
    relevance = (inter - (intra_image + intra_batch) / 2) / scale
    variance = (groups - 1) / groups * float(((relevance - relevance.mean()) ** 2).sum())

    dim = parts["dim_per_position"].double()
    if dim.numel() > 1:
        variance += float(dim.var(unbiased=True)) / dim.numel()
    return math.sqrt(variance) if math.isfinite(variance) else None
