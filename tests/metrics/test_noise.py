"""The jackknife noise of a DSE value over its probe images."""

from __future__ import annotations

import statistics

import pytest
import torch

from dse_tune import dse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scenes(generator: torch.Generator, images: int = 32) -> torch.Tensor:
    """Tokens of images drawn from one distribution: 5 prototypes plus noise."""
    prototypes = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 5, (images, 16), generator=generator)
    return prototypes[labels] + 0.7 * torch.randn(images, 16, 8, generator=generator)


def test_noise_leaves_the_score_unchanged_and_is_none_for_one_group():
    tokens = scenes(torch.Generator().manual_seed(1))
    plain, measured = dse(tokens, seed=3), dse(tokens, seed=3, noise=True)
    assert measured.score == plain.score and plain.noise is None
    assert dse(tokens[:8], seed=0, noise=True).noise is None


def test_the_jackknife_matches_the_spread_over_independent_probe_sets():
    generator = torch.Generator().manual_seed(2)
    draws = [scenes(generator) for _ in range(12)]
    spread = statistics.stdev(dse(t, seed=0).score for t in draws)
    estimates = statistics.median(dse(t, seed=0, noise=True).noise for t in draws)
    assert spread / 3 < estimates < 3 * spread


def test_more_probe_images_give_less_noise():
    generator = torch.Generator().manual_seed(3)
    small = statistics.median(dse(scenes(generator, 16), seed=0, noise=True).noise for _ in range(4))
    large = statistics.median(dse(scenes(generator, 64), seed=0, noise=True).noise for _ in range(4))
    assert large < small
