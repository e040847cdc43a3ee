"""Batched k-means for many small problems at once (pure torch).

DSE clusters every image (3 clusters) and every group of 8 images (24 clusters), here as
one batched problem of shape (G, n, d) instead of the public code's per-image loops. Its
departures from the public code (private generator, greedy k-means++ on squared
distances, empty clusters moved, labels never stale) are listed in docs/metric.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class KMeansResult:
    """Centroids (G, k, d), labels (G, n) and the number of Lloyd iterations run."""

    centroids: Tensor
    labels: Tensor
    iterations: int


def squared_norms(points: Tensor) -> Tensor:
    """Squared norms (G, n, 1) of points (G, n, d), computed once per k-means call."""
    return torch.linalg.vector_norm(points, dim=-1, keepdim=True).square()


def squared_distances(points: Tensor, centroids: Tensor, point_norms: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances (G, n, k) between points (G, n, d) and centroids (G, k, d)."""
    if point_norms is None:
        point_norms = squared_norms(points)
    centroid_norms = centroids.pow(2).sum(-1).unsqueeze(1)
    # ||x||^2 + ||c||^2 - 2 x.c as one batched GEMM; clamp the tiny negatives of cancellation.
    return torch.baddbmm(point_norms + centroid_norms, points, centroids.transpose(1, 2), alpha=-2.0).clamp_(
        min=0.0
    )


def _sample_by_weight(weights: Tensor, uniforms: Tensor) -> Tensor:
    """Indices (G, T) drawn per row of ``weights`` (G, n) with probability ∝ weight.

    ``uniforms`` (G, T) are pre-drawn: inverse-CDF sampling keeps the random stream
    identical on every device (only the generator's own device draws numbers).
    """
    cumulative = weights.cumsum(dim=1)
    total = cumulative[:, -1:]
    # Rows whose weights are all zero (every point already a seed) fall back to uniform.
    degenerate = total.squeeze(1) <= 0
    if degenerate.any():
        uniform_cumulative = torch.arange(1, weights.shape[1] + 1, device=weights.device, dtype=weights.dtype)
        cumulative = torch.where(degenerate[:, None], uniform_cumulative.expand_as(cumulative), cumulative)
        total = cumulative[:, -1:]
    index = torch.searchsorted(cumulative, uniforms * total, right=True)
    return index.clamp_(max=weights.shape[1] - 1)


def kmeans_plus_plus(
    points: Tensor,
    num_clusters: int,
    generator: torch.Generator,
    norms: Tensor | None = None,
    local_trials: int | None = None,
) -> Tensor:
    """Greedy k-means++ seeding, batched over the first dimension.

    Each new seed is drawn with probability ∝ squared distance to the nearest seed so far
    (Arthur & Vassilvitskii, 2007); of ``local_trials`` such draws the one that lowers
    the total squared distance most is kept (scikit-learn's default, 2 + ln k trials),
    which avoids most of the bad seedings a single draw makes.
    """
    groups, num_points, _ = points.shape
    if norms is None:
        norms = squared_norms(points)
    trials = local_trials if local_trials is not None else 2 + int(math.log(num_clusters))
    uniforms = torch.rand(groups, 1 + (num_clusters - 1) * trials, generator=generator, device=generator.device)
    uniforms = uniforms.to(device=points.device, dtype=points.dtype)
    batch = torch.arange(groups, device=points.device)
    first = (uniforms[:, 0] * num_points).long().clamp_(max=num_points - 1)
    centroids = [points[batch, first]]
    closest = squared_distances(points, centroids[0].unsqueeze(1), norms).squeeze(2)
    for step in range(1, num_clusters):
        draws = uniforms[:, 1 + (step - 1) * trials : 1 + step * trials]
        candidates = _sample_by_weight(closest, draws)  # (G, T)
        candidate_points = points.gather(1, candidates.unsqueeze(-1).expand(-1, -1, points.shape[2]))
        # Potential after adding each candidate: (G, n, T) -> (G, T).
        updated = torch.minimum(closest.unsqueeze(2), squared_distances(points, candidate_points, norms))
        best = updated.sum(dim=1).argmin(dim=1)
        centroids.append(candidate_points[batch, best])
        closest = updated[batch, :, best]
    return torch.stack(centroids, dim=1)


def cluster_means(points: Tensor, labels: Tensor, num_clusters: int) -> tuple[Tensor, Tensor]:
    """Per-cluster means (G, k, d) and counts (G, k), no Python loop.

    One ``index_add`` of every row into its (group, cluster) slot: a single pass over the
    points (a one-hot GEMM would cost k times more), differentiable in ``points``.
    """
    groups, _, dim = points.shape
    slots = (labels + torch.arange(groups, device=labels.device).unsqueeze(1) * num_clusters).reshape(-1)
    sums = points.new_zeros(groups * num_clusters, dim).index_add(0, slots, points.reshape(-1, dim))
    counts = torch.bincount(slots, minlength=groups * num_clusters).to(points.dtype)
    counts = counts.reshape(groups, num_clusters)
    return sums.reshape(groups, num_clusters, dim) / counts.clamp(min=1).unsqueeze(-1), counts


def _relocate_empty(points: Tensor, centroids: Tensor, counts: Tensor, distances: Tensor, labels: Tensor) -> Tensor:
    """Move each empty cluster onto one of the points farthest from their own centroid."""
    empty = counts == 0
    if not empty.any():
        return centroids
    own_distance = distances.gather(2, labels.unsqueeze(-1)).squeeze(-1)
    num_clusters = centroids.shape[1]
    farthest = own_distance.topk(min(num_clusters, own_distance.shape[1]), dim=1).indices
    # The j-th empty cluster of a group takes that group's j-th farthest point.
    rank = (empty.long().cumsum(dim=1) - 1).clamp_(min=0, max=farthest.shape[1] - 1)
    replacement_index = farthest.gather(1, rank)
    replacement = points.gather(1, replacement_index.unsqueeze(-1).expand(-1, -1, points.shape[2]))
    return torch.where(empty.unsqueeze(-1), replacement, centroids)


def kmeans(
    points: Tensor,
    num_clusters: int,
    *,
    generator: torch.Generator,
    max_iters: int = 30,
    tol: float = 1e-4,
) -> KMeansResult:
    """Lloyd's k-means on a batch of independent problems; the labels returned are the
    nearest-centroid assignment of the returned centroids (never one step stale).

    Args:
        points: (G, n, d) float tensor; problem g clusters ``points[g]``.
        num_clusters: k, at most n.
        generator: the only source of randomness (k-means++ seeding).
        max_iters: Lloyd iterations at most.
        tol: a problem stops when no label changes or its centroids move less than
            ``tol`` (Frobenius norm of the shift), as in the public code.
    """
    if points.ndim != 3:
        raise ValueError(f"points must have shape (G, n, d), got {tuple(points.shape)}")
    groups, num_points, _ = points.shape
    if not 1 <= num_clusters <= num_points:
        raise ValueError(f"num_clusters must be in [1, {num_points}] (points per problem), got {num_clusters}")
    norms = squared_norms(points)
    centroids = kmeans_plus_plus(points, num_clusters, generator, norms)
    distances = squared_distances(points, centroids, norms)
    labels = distances.argmin(dim=2)
    active = torch.arange(groups, device=points.device)
    iterations = 0
    for iterations in range(1, max_iters + 1):
        # Only problems that have not converged are iterated (groups converge at different times).
        all_active = active.numel() == groups
        sub_points = points if all_active else points[active]
        sub_labels = labels if all_active else labels[active]
        sub_norms = norms if all_active else norms[active]
        new_centroids, counts = cluster_means(sub_points, sub_labels, num_clusters)
        new_distances = squared_distances(sub_points, new_centroids, sub_norms)
        if (counts == 0).any():
            new_centroids = _relocate_empty(sub_points, new_centroids, counts, new_distances, sub_labels)
            new_distances = squared_distances(sub_points, new_centroids, sub_norms)
        new_labels = new_distances.argmin(dim=2)
        shift = (new_centroids - centroids[active]).flatten(1).norm(dim=1)
        # Decide convergence before the writes below (sub_labels may alias labels).
        converged = (new_labels == sub_labels).all(dim=1) | (shift < tol)
        centroids[active] = new_centroids
        labels[active] = new_labels
        active = active[~converged]
        if active.numel() == 0:
            break
    return KMeansResult(centroids=centroids, labels=labels, iterations=iterations)
