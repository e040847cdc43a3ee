"""RankMe, alpha-ReQ and LiDAR on inputs with known answers."""

from __future__ import annotations

import pytest
import torch

from dse_tune import alpha_req, lidar, rankme


def test_rankme_of_an_isotropic_matrix_is_its_dimension():
    orthogonal, _ = torch.linalg.qr(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
    assert rankme(orthogonal * 3.0, layout="embeddings") == pytest.approx(16, rel=1e-3)


def test_rankme_of_a_rank_one_matrix_is_one():
    generator = torch.Generator().manual_seed(0)
    rank_one = torch.randn(50, 1, generator=generator) @ torch.randn(1, 12, generator=generator)
    assert rankme(rank_one, layout="embeddings") == pytest.approx(1.0, abs=1e-2)


def test_rankme_pools_tokens_per_image_when_asked():
    tokens = torch.randn(10, 20, 6, generator=torch.Generator().manual_seed(0))
    assert rankme(tokens, pool=True) == pytest.approx(rankme(tokens.mean(1), layout="embeddings"))
    assert rankme(tokens) == pytest.approx(rankme(tokens.reshape(-1, 6), layout="embeddings"))


def test_alpha_req_recovers_a_power_law():
    generator = torch.Generator().manual_seed(0)
    dim, samples = 32, 4000
    scales = torch.arange(1, dim + 1, dtype=torch.float64) ** -1.0  # std ∝ i^-1 -> variance ∝ i^-2
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    data = (torch.randn(samples, dim, generator=generator, dtype=torch.float64) * scales) @ basis.T
    result = alpha_req(data, layout="embeddings", fit_range=(1, 24))
    assert result.alpha == pytest.approx(2.0, abs=0.1)
    assert result.r2 > 0.98
    assert result.fit_range == (1, 24)


def test_alpha_req_refuses_a_bad_fit_range():
    with pytest.raises(ValueError, match="fit_range must satisfy"):
        alpha_req(torch.randn(100, 8), layout="embeddings", fit_range=(5, 6))


@pytest.mark.parametrize("informative", [1, 3, 6])
def test_lidar_counts_the_discriminable_directions(informative):
    generator = torch.Generator().manual_seed(0)
    images, views, dim = 200, 4, 16
    class_means = torch.zeros(images, dim)
    class_means[:, :informative] = torch.randn(images, informative, generator=generator) * 5
    views_of_images = class_means.unsqueeze(1) + 0.1 * torch.randn(images, views, dim, generator=generator)
    assert lidar(views_of_images) == pytest.approx(informative, rel=0.25)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rankme(torch.randn(5, 4, 3), layout="embeddings"), r"shape \(n, d\)"),
        (lambda: rankme(torch.zeros(5, 4), layout="embeddings"), "all zero"),
        (lambda: rankme(torch.randn(5, 4), layout="embeddings", pool=True), "pool=True needs dense"),
        (lambda: rankme(torch.randn(2, 5, 4), layout="image"), "layout must be one of"),
        (lambda: lidar(torch.randn(5, 4)), r"shape \(n images, q views, d\)"),
        (lambda: lidar(torch.randn(5, 1, 4)), "at least 2 images and 2 views"),
        (lambda: rankme(torch.full((5, 4), float("nan")), layout="embeddings"), "20 NaN"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
