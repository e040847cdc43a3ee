"""Batched k-means: recovery, label consistency, empty clusters, seeding law, RNG hygiene."""

from __future__ import annotations

import pytest
import torch

from dse_tune.metrics.kmeans import _sample_by_weight, kmeans, kmeans_plus_plus, squared_distances


def separated_problems(groups=6, per_cluster=20, clusters=4, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, clusters, dim, generator=generator) * 10
    truth = torch.arange(clusters).repeat_interleave(per_cluster).expand(groups, -1)
    points = centres.gather(1, truth.unsqueeze(-1).expand(-1, -1, dim))
    points = points + 0.1 * torch.randn(points.shape, generator=generator)
    order = torch.rand(groups, clusters * per_cluster, generator=generator).argsort(1)
    return points.gather(1, order.unsqueeze(-1).expand(-1, -1, dim)), truth.gather(1, order)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two labelings agree up to a renaming of the clusters."""
    return bool(((a.unsqueeze(0) == a.unsqueeze(1)) == (b.unsqueeze(0) == b.unsqueeze(1))).all())


def test_recovers_well_separated_clusters_in_every_problem():
    points, truth = separated_problems()
    result = kmeans(points, 4, generator=torch.Generator().manual_seed(0))
    assert result.centroids.shape == (6, 4, 8) and result.labels.shape == (6, 80)
    for group in range(6):
        assert same_partition(result.labels[group], truth[group])


def test_labels_are_the_nearest_centroid_of_the_returned_centroids():
    points = torch.randn(5, 50, 6, generator=torch.Generator().manual_seed(1))
    for max_iters in (1, 2, 30):
        result = kmeans(points, 7, generator=torch.Generator().manual_seed(0), max_iters=max_iters)
        nearest = squared_distances(points, result.centroids).argmin(dim=2)
        assert torch.equal(result.labels, nearest)


def test_converged_centroids_are_the_means_of_their_members():
    points, _ = separated_problems(groups=2)
    result = kmeans(points, 4, generator=torch.Generator().manual_seed(0))
    for group in range(2):
        for cluster in range(4):
            members = points[group][result.labels[group] == cluster]
            assert torch.allclose(result.centroids[group, cluster], members.mean(0), atol=1e-5)


def test_duplicate_points_leave_no_nan_and_use_every_distinct_point():
    # 3 distinct points, 3 clusters, many duplicates: seeding falls back to uniform when all
    # remaining weights are zero and empty clusters are re-seeded.
    base = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    points = base[torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])].unsqueeze(0).repeat(3, 1, 1)
    result = kmeans(points, 3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result.centroids).all()
    for group in range(3):
        assert result.labels[group].unique().numel() == 3


def test_empty_cluster_is_moved_to_the_farthest_point():
    # Four identical points and one outlier, two clusters: whatever the seeding, the
    # outlier must end in a cluster of its own.
    points = torch.tensor([[[0.0], [0.0], [0.0], [0.0], [100.0]]]).repeat(8, 1, 1)
    result = kmeans(points, 2, generator=torch.Generator().manual_seed(0))
    for group in range(8):
        labels = result.labels[group]
        assert labels[4] != labels[0] and (labels[:4] == labels[0]).all()


def test_inverse_cdf_sampling_follows_the_weights():
    weights = torch.tensor([[1.0, 3.0, 0.0, 4.0]])
    uniforms = torch.tensor([[0.0, 0.124, 0.126, 0.49, 0.51, 0.99]])
    assert _sample_by_weight(weights, uniforms).tolist() == [[0, 0, 1, 1, 3, 3]]


def test_seeding_samples_by_squared_distance():
    # Points 0, 1, 3 on a line; one draw per step (no greedy trials). After the first seed,
    # P(second seed = 3) is 0.5667 with squared-distance weights and 0.4722 with distances.
    groups = 20000
    points = torch.tensor([[0.0], [1.0], [3.0]]).expand(groups, -1, -1).contiguous()
    seeds = kmeans_plus_plus(points, 2, torch.Generator().manual_seed(0), local_trials=1)
    share_three = float((seeds[:, 1, 0] == 3.0).double().mean())
    assert share_three == pytest.approx(17 / 30, abs=0.015)


def test_uses_only_the_given_generator():
    points = torch.randn(4, 30, 5)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = kmeans(points, 3, generator=torch.Generator().manual_seed(42))
    assert torch.equal(torch.get_rng_state(), state)
    second = kmeans(points, 3, generator=torch.Generator().manual_seed(42))
    assert torch.equal(first.labels, second.labels) and torch.equal(first.centroids, second.centroids)


@pytest.mark.parametrize("clusters", [0, 31])
def test_cluster_count_out_of_range_is_refused(clusters):
    with pytest.raises(ValueError, match="num_clusters must be in"):
        kmeans(torch.randn(2, 30, 4), clusters, generator=torch.Generator())
