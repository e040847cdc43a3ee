"""DSE: the Dense representation Structure Estimator (Dai et al., NeurIPS 2025, arXiv 2510.17299).

A label-free score of dense features that tracks dense downstream quality (segmentation
mIoU) across checkpoints of one run: ``M_inter - (M_intra_image + M_intra_batch) / 2 +
lambda * M_dim``. Pure torch, deterministic for a given seed, never touches the global
RNG. The formulas, and where this implementation departs from the public code: docs/metric.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dse_tune.metrics.kmeans import cluster_means, kmeans, squared_distances
from dse_tune.metrics.noise import jackknife_noise
from dse_tune.metrics.spectral import gram_singular_values, normalized_effective_rank
from dse_tune.metrics.validation import (
    ConstantFeaturesError,
    as_token_tensor,
    check_positive_int,
    resolve_generator,
)

DimEstimator = Literal["per_position", "all_tokens"]
DIM_ESTIMATORS = ("per_position", "all_tokens")
COMPONENTS = ("inter", "intra_image", "intra_batch", "dim")


@dataclass(frozen=True)
class DSEResult:
    """The DSE score, its four components, and the settings that produced them.

    ``score`` uses lambda = 1 (the public code's raw value); ``score_with(lam)`` applies
    any other weight, and ``dse_tune.standardize_dse`` the run-level rescaling.
    """

    inter: float
    intra_image: float
    intra_batch: float
    dim: float
    score: float
    scale: float
    num_images: int
    num_tokens: int
    channels: int
    local_clusters: int
    global_clusters: int
    group_size: int
    normalize: bool
    dim_estimator: str
    dim_positions: int
    #: Standard error of ``score`` over the probe images (``dse(..., noise=True)``,
    #: :func:`dse_tune.metrics.noise.jackknife_noise`); None when not measured.
    noise: float | None = None

    @property
    def class_relevance(self) -> float:
        """M_inter - (M_intra_image + M_intra_batch) / 2: the lambda-free part of DSE."""
        return self.inter - (self.intra_image + self.intra_batch) / 2

    def score_with(self, lam: float) -> float:
        return self.class_relevance + lam * self.dim

    def as_dict(self) -> dict:
        return asdict(self)


def dse_components(
    tokens: Tensor,
    *,
    local_clusters: int,
    global_clusters: int,
    group_size: int,
    normalize: bool,
    generator: torch.Generator,
    dim_estimator: DimEstimator = "per_position",
    dim_positions: int | None = None,
    max_iters: int = 30,
    groups: bool = False,
) -> dict[str, Tensor]:
    """The four DSE components of tokens (B, N, d) as 0-dim tensors, plus the scale.

    The shared engine of ``dse`` (no_grad, inputs checked there) and ``DSERegularizer``
    (k-means on detached tokens, every other step differentiable).

    With ``groups=True`` the result also holds the per-image and per-group terms the
    components average (``per_image_intra``, ``per_image_scale`` (B,), ``group_inter``,
    ``group_spread_sum``, ``group_spread_count`` (G,), ``dim_per_position`` (P,)), for
    :func:`dse_tune.metrics.noise.jackknife_noise`.
    """
    if normalize:
        tokens = F.normalize(tokens, dim=-1)
    distances = (tokens - tokens.mean(dim=(0, 1), keepdim=True)).norm(dim=-1)
    scale = distances.mean()

    # Local pseudo-classes: k-means inside each image.
    local = kmeans(tokens.detach(), local_clusters, generator=generator, max_iters=max_iters)
    local_spreads, local_valid = cluster_spreads(tokens, local.labels, local_clusters)
    per_image = (local_spreads * local_valid).sum(1) / local_valid.sum(1).clamp(min=1)
    intra_image = per_image.mean()

    # Global pseudo-classes: k-means over consecutive groups of images.
    inter_terms, group_sums, group_counts = [], [], []
    for group in _image_groups(tokens, group_size):
        clustering = kmeans(group.detach(), global_clusters, generator=generator, max_iters=max_iters)
        spreads, valid = cluster_spreads(group, clustering.labels, global_clusters)
        group_sums.append((spreads * valid).sum(1))
        group_counts.append(valid.sum(1))
        inter_terms.append(_distance_to_other_centroids(group, clustering.centroids, clustering.labels))
    intra_batch = torch.cat(group_sums).sum() / max(int(torch.cat(group_counts).sum()), 1)
    inter = torch.cat(inter_terms).mean()

    dim_parts = effective_dimensionality(
        tokens, generator, estimator=dim_estimator, positions=dim_positions, per_position=groups
    )
    parts = {
        "inter": inter / scale,
        "intra_image": intra_image / scale,
        "intra_batch": intra_batch / scale,
        "dim": dim_parts.mean(),
        "scale": scale,
    }
    if groups:
        parts.update(
            per_image_intra=per_image, per_image_scale=distances.mean(1), group_inter=torch.cat(inter_terms),
            group_spread_sum=torch.cat(group_sums), group_spread_count=torch.cat(group_counts),
            dim_per_position=dim_parts,
        )
    return parts


def dse(
    features: Tensor,
    *,
    layout: str = "tokens",
    local_clusters: int = 3,
    global_clusters: int = 24,
    group_size: int = 8,
    normalize: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    dim_estimator: DimEstimator = "per_position",
    dim_positions: int | None = None,
    noise: bool = False,
) -> DSEResult:
    """DSE of dense features, with its components.

    Args:
        features: (B, N, d) tokens with ``layout="tokens"``, or (B, d, H, W) feature maps
            with ``layout="feature_map"``. float16/bfloat16 are computed in float32,
            float64 in float64.
        local_clusters: k-means clusters inside each image (paper: 3).
        global_clusters: k-means clusters inside each group of images (paper: 24).
        group_size: images per global group, taken consecutively (paper: 8). The last
            group may be smaller.
        normalize: L2-normalise every token first (paper's setting for ViTs).
        seed / generator: the only randomness (k-means++ seeding and the M_dim shuffle).
            Neither given means seed 0. The global RNG is never used.
        dim_estimator: ``"per_position"`` is the metric's M_dim (tokens shuffled within
            each image, effective rank of the B x d matrix at each position, averaged);
            ``"all_tokens"`` is the cheaper variant of the public regulariser (one
            effective rank of all B*N tokens). They are different numbers.
        dim_positions: with ``"per_position"``, average over this many shuffled positions
            instead of all N (an unbiased, noisier estimate of the same mean; faster on
            CPU). None means all N, as in the paper.
        noise: also estimate the standard error of the score over the probe images
            (:func:`dse_tune.metrics.noise.jackknife_noise`; no extra clustering).

    Example:
        >>> import torch, dse_tune
        >>> tokens = torch.randn(16, 64, 32)
        >>> result = dse_tune.dse(tokens, seed=0)
        >>> round(result.score, 6) == round(dse_tune.dse(tokens, seed=0).score, 6)
        True
    """
    tokens = as_token_tensor(features, layout)
    local_clusters = check_positive_int(local_clusters, "local_clusters")
    global_clusters = check_positive_int(global_clusters, "global_clusters")
    group_size = check_positive_int(group_size, "group_size")
    if dim_estimator not in DIM_ESTIMATORS:
        raise ValueError(f"dim_estimator must be one of {DIM_ESTIMATORS}, got {dim_estimator!r}")
    num_images, num_tokens, channels = tokens.shape
    if dim_positions is not None:
        check_positive_int(dim_positions, "dim_positions")
        if dim_positions > num_tokens:
            raise ValueError(f"dim_positions={dim_positions} exceeds the {num_tokens} tokens per image")
    check_cluster_sizes(num_images, num_tokens, local_clusters, global_clusters, group_size)
    rng = resolve_generator(seed, generator)
    with torch.no_grad():
        parts = dse_components(
            tokens,
            local_clusters=local_clusters,
            global_clusters=global_clusters,
            group_size=group_size,
            normalize=normalize,
            generator=rng,
            dim_estimator=dim_estimator,
            dim_positions=dim_positions,
            groups=noise,
        )
    values = {name: float(parts[name]) for name in (*COMPONENTS, "scale")}
    # Normalised tokens have unit length; raw ones are compared with their own magnitude.
    magnitude = 1.0 if normalize else max(float(tokens.abs().max()), 1e-30)
    if values["scale"] <= 1e-6 * magnitude:
        raise ConstantFeaturesError(
            "features are constant: every token is the same vector, so DSE (a ratio to the "
            "tokens' spread) is undefined"
        )
    score = values["inter"] - (values["intra_image"] + values["intra_batch"]) / 2 + values["dim"]
    if not math.isfinite(score):
        raise FloatingPointError(f"DSE came out non-finite ({values}); please report this input")
    return DSEResult(
        **values,
        score=score,
        num_images=num_images,
        num_tokens=num_tokens,
        channels=channels,
        local_clusters=local_clusters,
        global_clusters=global_clusters,
        group_size=group_size,
        normalize=normalize,
        dim_estimator=dim_estimator,
        dim_positions=num_tokens if dim_positions is None or dim_estimator == "all_tokens" else dim_positions,
        noise=jackknife_noise(parts, group_size) if noise else None,
    )


def check_cluster_sizes(
    num_images: int, num_tokens: int, local_clusters: int, global_clusters: int, group_size: int
) -> None:
    """Refuse inputs too small for the requested clusters, naming what to change."""
    if num_images < 2:
        raise ValueError(f"features must hold at least 2 images (M_dim compares images), got {num_images}")
    if num_tokens <= local_clusters:
        raise ValueError(
            f"local_clusters={local_clusters} needs more than {local_clusters} tokens per image, "
            f"got {num_tokens}; lower local_clusters or use a finer token grid"
        )
    last_group_images = num_images % group_size or min(group_size, num_images)
    smallest_group_tokens = min(num_images, last_group_images) * num_tokens
    if smallest_group_tokens <= global_clusters:
        raise ValueError(
            f"global_clusters={global_clusters} needs more than {global_clusters} tokens per group of "
            f"images, but a group holds {smallest_group_tokens} ({last_group_images} image(s) x "
            f"{num_tokens} tokens); lower global_clusters, or use a number of images that is a "
            f"multiple of group_size={group_size}"
        )


def _image_groups(tokens: Tensor, group_size: int) -> list[Tensor]:
    """Consecutive groups of images as (G, group_size*N, d) batches: full groups, then the rest."""
    num_images, num_tokens, channels = tokens.shape
    full = (num_images // group_size) * group_size
    groups = []
    if full:
        groups.append(tokens[:full].reshape(full // group_size, group_size * num_tokens, channels))
    if full < num_images:
        groups.append(tokens[full:].reshape(1, -1, channels))
    return groups


def _distance_to_other_centroids(points: Tensor, centroids: Tensor, labels: Tensor) -> Tensor:
    """Per group, the mean over tokens of the distance to the nearest *other* centroid: (G,)."""
    distances = squared_distances(points, centroids.detach())
    own = F.one_hot(labels, centroids.shape[1]).bool()
    nearest_other = distances.masked_fill(own, float("inf")).min(dim=2).values
    # sqrt's gradient at 0 is infinite; a token sitting on another centroid is measure-zero.
    return nearest_other.clamp(min=1e-12).sqrt().mean(dim=1)


def _padded_size(sizes: Tensor) -> Tensor:
    """Round cluster sizes up to a few padding buckets (at most ~25% padding each)."""
    quantum = torch.clamp(2 ** (torch.log2(sizes.clamp(min=1).float()).floor() - 2), min=8).long()
    return (sizes + quantum - 1) // quantum * quantum


def cluster_spreads(points: Tensor, labels: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
    """Spread of every cluster: nuclear norm of its centred tokens / sqrt(max(n - 1, d)).

    ``points`` (G, n, d), ``labels`` (G, n) -> spreads (G, k) and a float mask (G, k) of the
    clusters with at least 2 points (smaller ones have no spread and are left out, as in
    the public code).
    """
    groups, num_points, channels = points.shape
    means, counts = cluster_means(points, labels, num_clusters)
    flat_points = points.reshape(groups * num_points, channels)
    flat_means = means.reshape(groups * num_clusters, channels)
    # Rows of each group sorted by cluster: cluster c of group g is a contiguous run.
    group_offsets = torch.arange(groups, device=points.device).unsqueeze(1)
    sorted_rows = (labels.argsort(dim=1, stable=True) + group_offsets * num_points).reshape(-1)
    sizes = counts.long().reshape(-1)
    starts = (counts.long().cumsum(1) - counts.long() + group_offsets * num_points).reshape(-1)
    valid = sizes >= 2
    padded = _padded_size(sizes)
    spreads = points.new_zeros(groups * num_clusters)
    for size in padded[valid].unique().tolist():
        members = (valid & (padded == size)).nonzero().squeeze(1)
        offsets = torch.arange(size, device=points.device)
        inside = offsets < sizes[members, None]
        position = torch.where(inside, starts[members, None] + offsets, starts[members, None])
        # One gather per bucket; centring and zeroing the padding rows happen on that copy.
        # In place on the fresh gathered copy (autograd-safe: neither op needs it back).
        block = flat_points[sorted_rows[position]]
        block.sub_(flat_means[members].unsqueeze(1)).mul_(inside.unsqueeze(-1).to(block.dtype))
        nuclear = gram_singular_values(block).sum(-1)
        denominator = torch.clamp(sizes[members] - 1, min=channels).to(points.dtype).sqrt()
        spreads = spreads.index_put((members,), nuclear / denominator)
    return spreads.reshape(groups, num_clusters), valid.reshape(groups, num_clusters).to(points.dtype)


def effective_dimensionality(
    tokens: Tensor,
    generator: torch.Generator,
    *,
    estimator: DimEstimator = "per_position",
    positions: int | None = None,
    chunk: int = 64,
    per_position: bool = False,
) -> Tensor:
    """M_dim of tokens (B, N, d) (already normalised if DSE normalises).

    The estimators are described in :func:`dse`. With ``per_position=True`` the ranks of
    each position are returned, not their mean (one value for ``all_tokens``).
    """
    num_images, num_tokens, channels = tokens.shape
    if estimator == "all_tokens":
        rank = normalized_effective_rank(tokens.reshape(1, num_images * num_tokens, channels))
        return rank if per_position else rank.squeeze(0)
    keys = torch.rand(num_images, num_tokens, generator=generator, device=generator.device)
    permutation = keys.argsort(dim=1).to(tokens.device)
    if positions is not None:
        permutation = permutation[:, :positions]
    shuffled = tokens.gather(1, permutation.unsqueeze(-1).expand(-1, -1, channels))
    by_position = shuffled.transpose(0, 1)  # (positions, B, d)
    # Chunks bound the Gram matrices held at once (positions x d x d).
    ranks = [normalized_effective_rank(by_position[i : i + chunk]) for i in range(0, by_position.shape[0], chunk)]
    return torch.cat(ranks) if per_position else torch.cat(ranks).mean()
