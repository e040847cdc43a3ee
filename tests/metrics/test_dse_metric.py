"""DSE: analytic behaviour, a loop-based re-derivation, invariances, determinism, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dse_tune
from dse_tune.metrics import dse_metric as dse_module
from dse_tune.metrics.kmeans import KMeansResult, cluster_means


def blobs(images=16, tokens=48, dim=32, classes=6, noise=0.05, seed=0, dtype=torch.float32):
    """Tokens drawn around a few well-separated class centres; returns (tokens, labels)."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=generator, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, classes, (images, tokens), generator=generator)
    points = centres[labels] + noise * torch.randn(images, tokens, dim, generator=generator, dtype=torch.float64)
    return points.to(dtype), labels


# ---------------------------------------------------------------- slow literal reference


def reference_dse(tokens, local_labels, global_labels, group_size, shuffle_seed, normalize=True):
    """DSE written from the formulas with Python loops and SVDs, in float64."""
    x = tokens.double()
    if normalize:
        x = F.normalize(x, dim=-1)
    images, count, dim = x.shape
    scale = (x - x.reshape(-1, dim).mean(0)).norm(dim=-1).mean()

    def spread(cluster):
        centred = cluster - cluster.mean(0)
        return torch.linalg.svdvals(centred).sum() / math.sqrt(max(cluster.shape[0] - 1, dim))

    per_image = []
    for b in range(images):
        values = [spread(x[b][local_labels[b] == c]) for c in local_labels[b].unique() if (local_labels[b] == c).sum() > 1]
        per_image.append(sum(values) / len(values))
    intra_image = sum(per_image) / len(per_image) / scale

    global_spreads, inter_means = [], []
    for g, start in enumerate(range(0, images, group_size)):
        group = x[start : start + group_size].reshape(-1, dim)
        labels = global_labels[g]
        present = labels.unique()
        centroids = {int(c): group[labels == c].mean(0) for c in present}
        for c in present:
            members = group[labels == c]
            if members.shape[0] > 1:
                global_spreads.append(spread(members))
        distances = []
        for i in range(group.shape[0]):
            others = [torch.dist(group[i], centroids[c]) for c in centroids if c != int(labels[i])]
            distances.append(min(others))
        inter_means.append(sum(distances) / len(distances))
    intra_batch = sum(global_spreads) / len(global_spreads) / scale
    inter = sum(inter_means) / len(inter_means) / scale

    keys = torch.rand(images, count, generator=torch.Generator().manual_seed(shuffle_seed))
    permutation = keys.argsort(dim=1)
    ranks = []
    for n in range(count):
        matrix = torch.stack([x[b, permutation[b, n]] for b in range(images)])
        s = torch.linalg.svdvals(matrix)
        p = s / s.sum()
        p = p[p > 0]
        ranks.append(torch.exp(-(p * p.log()).sum()) / min(images, dim))
    dim_term = sum(ranks) / len(ranks)
    return {
        "inter": float(inter),
        "intra_image": float(intra_image),
        "intra_batch": float(intra_batch),
        "dim": float(dim_term),
    }


def fixed_kmeans(labels_by_k):
    """A k-means replacement that returns a given clustering (centroids = cluster means)."""

    def run(points, num_clusters, *, generator, max_iters=30, tol=1e-4):
        labels = labels_by_k[num_clusters]
        centroids, _ = cluster_means(points, labels, num_clusters)
        return KMeansResult(centroids=centroids, labels=labels, iterations=0)

    return run


@pytest.mark.parametrize("normalize", [True, False])
def test_fast_path_matches_literal_reference_with_fixed_clusterings(monkeypatch, normalize):
    tokens, _ = blobs(images=16, tokens=20, dim=12, classes=5, noise=0.3, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    local_labels = torch.randint(0, 3, (16, 20), generator=generator)
    global_labels = torch.randint(0, 7, (2, 8 * 20), generator=generator)
    monkeypatch.setattr(dse_module, "kmeans", fixed_kmeans({3: local_labels, 7: global_labels}))
    result = dse_tune.dse(tokens, local_clusters=3, global_clusters=7, group_size=8, seed=11, normalize=normalize)
    expected = reference_dse(tokens, local_labels, global_labels, 8, shuffle_seed=11, normalize=normalize)
    for name, value in expected.items():
        assert getattr(result, name) == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert result.score == pytest.approx(
        expected["inter"] - (expected["intra_image"] + expected["intra_batch"]) / 2 + expected["dim"], rel=1e-5
    )


def test_float32_path_stays_close_to_the_float64_reference(monkeypatch):
    tokens, _ = blobs(images=8, tokens=30, dim=16, classes=4, noise=0.2, dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    local_labels = torch.randint(0, 3, (8, 30), generator=generator)
    global_labels = torch.randint(0, 6, (1, 8 * 30), generator=generator)
    monkeypatch.setattr(dse_module, "kmeans", fixed_kmeans({3: local_labels, 6: global_labels}))
    result = dse_tune.dse(tokens.float(), global_clusters=6, seed=2)
    expected = reference_dse(tokens, local_labels, global_labels, 8, shuffle_seed=2)
    for name, value in expected.items():
        assert getattr(result, name) == pytest.approx(value, rel=2e-3), name


# ---------------------------------------------------------------- analytic behaviour


def test_separated_classes_score_higher_than_one_blob():
    structured, _ = blobs(images=16, tokens=48, dim=32, classes=6, noise=0.05)
    one_blob = torch.randn(16, 48, 32, generator=torch.Generator().manual_seed(1))
    # One global cluster per class: with more clusters than classes, the nearest "other"
    # centroid sits inside the same class and M_inter no longer sees class separation.
    good = dse_tune.dse(structured, global_clusters=6, seed=0)
    bad = dse_tune.dse(one_blob, global_clusters=6, seed=0)
    assert good.intra_image < bad.intra_image
    assert good.intra_batch < bad.intra_batch
    assert good.inter > bad.inter
    assert good.score > bad.score


def test_collapsed_features_have_lower_dimensionality():
    generator = torch.Generator().manual_seed(0)
    full_rank = torch.randn(32, 24, 16, generator=generator)
    # Every token a mix of 2 directions: rank 2 out of 16.
    basis = torch.randn(2, 16, generator=generator)
    collapsed = torch.randn(32, 24, 2, generator=generator) @ basis
    full, low = dse_tune.dse(full_rank, seed=0), dse_tune.dse(collapsed, seed=0)
    assert low.dim < 0.25 * full.dim
    assert 0 < low.dim <= 2 / 16 + 1e-6  # effective rank at most the true rank


def test_more_noise_inside_classes_lowers_dse():
    scores = [dse_tune.dse(blobs(noise=noise)[0], seed=0).score for noise in (0.02, 0.2, 0.8)]
    assert scores[0] > scores[1] > scores[2]


# ---------------------------------------------------------------- invariances


def test_token_order_within_an_image_does_not_change_clustering_terms():
    tokens, _ = blobs(images=16, tokens=40, dim=24, classes=3, noise=0.02)
    generator = torch.Generator().manual_seed(9)
    permuted = torch.stack([image[torch.randperm(40, generator=generator)] for image in tokens])
    a, b = dse_tune.dse(tokens, local_clusters=3, global_clusters=3, seed=0), dse_tune.dse(
        permuted, local_clusters=3, global_clusters=3, seed=0
    )
    for name in ("inter", "intra_image", "intra_batch"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-4), name


def test_image_order_within_a_group_does_not_change_local_terms():
    tokens, _ = blobs(images=8, tokens=40, dim=24, classes=3, noise=0.02)
    reordered = tokens[torch.tensor([3, 1, 7, 0, 5, 2, 6, 4])]
    a = dse_tune.dse(tokens, local_clusters=3, global_clusters=3, seed=0)
    b = dse_tune.dse(reordered, local_clusters=3, global_clusters=3, seed=0)
    assert a.intra_image == pytest.approx(b.intra_image, rel=1e-4)
    assert a.intra_batch == pytest.approx(b.intra_batch, rel=1e-4)
    assert a.inter == pytest.approx(b.inter, rel=1e-4)


def test_global_scale_does_not_matter_without_normalisation():
    tokens, _ = blobs(images=16, tokens=32, dim=16, noise=0.3, dtype=torch.float64)
    a = dse_tune.dse(tokens, normalize=False, seed=4)
    b = dse_tune.dse(tokens * 37.5, normalize=False, seed=4)
    for name in ("inter", "intra_image", "intra_batch", "dim", "score"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-6), name


def test_feature_map_layout_equals_tokens_layout():
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(8, 16, 5, 6, generator=generator)  # (B, d, H, W)
    tokens = maps.flatten(2).transpose(1, 2)
    a = dse_tune.dse(maps, layout="feature_map", global_clusters=8, seed=1)
    b = dse_tune.dse(tokens, global_clusters=8, seed=1)
    assert a == b


# ---------------------------------------------------------------- determinism and RNG


def test_same_seed_same_result_bit_identical():
    tokens = torch.randn(24, 36, 20, generator=torch.Generator().manual_seed(0))
    assert dse_tune.dse(tokens, seed=7).as_dict() == dse_tune.dse(tokens, seed=7).as_dict()


def test_generator_argument_is_the_source_of_randomness():
    tokens = torch.randn(24, 36, 20, generator=torch.Generator().manual_seed(0))
    by_seed = dse_tune.dse(tokens, seed=5)
    by_generator = dse_tune.dse(tokens, generator=torch.Generator().manual_seed(5))
    assert by_seed == by_generator


def test_global_rng_is_untouched():
    tokens = torch.randn(16, 30, 12)
    torch.manual_seed(123)
    expected_next = torch.rand(8)
    torch.manual_seed(123)
    state_before = torch.get_rng_state()
    dse_tune.dse(tokens, seed=0)
    dse_tune.dse(tokens)  # default seed path too
    assert torch.equal(torch.get_rng_state(), state_before)
    assert torch.equal(torch.rand(8), expected_next)


def test_half_precision_is_computed_in_float32():
    tokens = torch.randn(16, 32, 16, generator=torch.Generator().manual_seed(0))
    half = tokens.to(torch.bfloat16)
    result = dse_tune.dse(half, seed=0)
    reference = dse_tune.dse(half.float(), seed=0)
    assert result == reference


# ---------------------------------------------------------------- options


def test_dim_estimators_are_different_numbers_and_all_tokens_is_the_stacked_rank():
    tokens = torch.randn(16, 24, 8, generator=torch.Generator().manual_seed(0))
    per_position = dse_tune.dse(tokens, seed=0)
    all_tokens = dse_tune.dse(tokens, seed=0, dim_estimator="all_tokens")
    stacked = F.normalize(tokens.double(), dim=-1).reshape(-1, 8)
    s = torch.linalg.svdvals(stacked)
    p = s / s.sum()
    expected = float(torch.exp(-(p * p.log()).sum()) / 8)
    assert all_tokens.dim == pytest.approx(expected, rel=1e-4)
    assert per_position.dim != pytest.approx(all_tokens.dim, rel=1e-3)
    assert all_tokens.dim_estimator == "all_tokens"


def test_dim_positions_subsamples_the_same_shuffle():
    tokens = torch.randn(32, 64, 16, generator=torch.Generator().manual_seed(0))
    full = dse_tune.dse(tokens, seed=0)
    subset = dse_tune.dse(tokens, seed=0, dim_positions=16)
    assert subset.dim_positions == 16 and full.dim_positions == 64
    assert subset.dim == pytest.approx(full.dim, rel=0.05)
    assert (subset.inter, subset.intra_image, subset.intra_batch) == (full.inter, full.intra_image, full.intra_batch)


def test_result_records_the_settings_used():
    result = dse_tune.dse(torch.randn(10, 30, 8), seed=0, group_size=4, global_clusters=12)
    assert (result.num_images, result.num_tokens, result.channels) == (10, 30, 8)
    assert (result.local_clusters, result.global_clusters, result.group_size) == (3, 12, 4)
    assert result.score_with(0.0) == pytest.approx(result.class_relevance)
    assert result.score_with(1.0) == pytest.approx(result.score)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "features, kwargs, match",
    [
        (torch.randn(4, 30, 8).tolist(), {}, "features must be a torch.Tensor"),
        (torch.randint(0, 5, (4, 30, 8)), {}, "floating-point"),
        (torch.randn(4, 8), {}, r"shape \(B, N, d\)"),
        (torch.randn(4, 8, 5, 6), {}, "layout='feature_map'"),
        (torch.randn(4, 30, 8), {"layout": "feature_map"}, r"\(B, d, H, W\)"),
        (torch.randn(4, 30, 8), {"layout": "grid"}, "layout must be one of"),
        (torch.randn(1, 30, 8), {}, "at least 2 images"),
        (torch.randn(4, 3, 8), {}, "local_clusters=3 needs more than 3 tokens"),
        (torch.randn(2, 10, 8), {}, "global_clusters=24 needs more than 24 tokens per group"),
        (torch.randn(9, 20, 8), {}, r"group holds 20 \(1 image\(s\) x 20 tokens\)"),
        (torch.randn(4, 30, 8), {"local_clusters": 0}, "local_clusters must be an integer >= 1"),
        (torch.randn(4, 30, 8), {"group_size": 2.5}, "group_size must be an integer"),
        (torch.randn(4, 30, 8), {"dim_estimator": "rank"}, "dim_estimator must be one of"),
        (torch.randn(4, 30, 8), {"dim_positions": 31}, "dim_positions=31 exceeds"),
        (torch.randn(4, 30, 8), {"seed": 1, "generator": torch.Generator()}, "either seed or generator"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(features, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dse_tune.dse(features, **kwargs)


def test_nan_and_inf_are_counted_in_the_error():
    tokens = torch.randn(4, 30, 8)
    tokens[0, 0, 0] = float("nan")
    tokens[1, 2, 3] = float("nan")
    tokens[2, 0, 1] = float("inf")
    with pytest.raises(ValueError, match=r"2 NaN and 1 infinite value\(s\) out of 960"):
        dse_tune.dse(tokens)


@pytest.mark.parametrize("normalize", [True, False])
def test_constant_features_raise_instead_of_nan(normalize):
    constant = torch.ones(8, 30, 16) * 3.0
    with pytest.raises(ValueError, match="features are constant"):
        dse_tune.dse(constant, normalize=normalize)
