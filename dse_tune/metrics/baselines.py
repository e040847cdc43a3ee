"""Image-level label-free baselines, for comparison with DSE on the same inputs.

Each takes dense features in the DSE conventions (``layout="tokens"`` (B, N, d) or
``"feature_map"`` (B, d, H, W), whose tokens are all used as samples, optionally mean
pooled per image with ``pool=True``), or plain embeddings with ``layout="embeddings"``
(n, d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dse_tune.metrics.spectral import gram_singular_values
from dse_tune.metrics.validation import as_float_tensor, as_token_tensor, check_finite

EMBEDDING_LAYOUTS = ("tokens", "feature_map", "embeddings")


def as_samples(features: Tensor, layout: str = "tokens", pool: bool = False) -> Tensor:
    """Samples (n, d) from dense features or embeddings; float32 or float64."""
    if layout == "embeddings":
        if pool:
            raise ValueError("pool=True needs dense features (layout='tokens' or 'feature_map')")
        return as_float_tensor(features, layout)
    if layout not in EMBEDDING_LAYOUTS:
        raise ValueError(f"layout must be one of {EMBEDDING_LAYOUTS}, got {layout!r}")
    tokens = as_token_tensor(features, layout)
    return tokens.mean(dim=1) if pool else tokens.reshape(-1, tokens.shape[-1])


def _singular_values(samples: Tensor) -> Tensor:
    return gram_singular_values(samples.unsqueeze(0)).squeeze(0).flip(0)


def _entropy_rank(values: Tensor, epsilon: float) -> float:
    probabilities = values / values.sum().clamp(min=torch.finfo(values.dtype).tiny) + epsilon
    return float(torch.exp(-(probabilities * probabilities.log()).sum()))


def rankme(features: Tensor, *, layout: str = "tokens", pool: bool = False, epsilon: float = 1e-7) -> float:
    """RankMe: exp(entropy of the normalised singular values) of the sample matrix.

    Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the downstream performance
    of pretrained self-supervised representations by their rank", ICML 2023. Not
    divided by min(n, d) (unlike DSE's M_dim), as in the paper.
    """
    samples = as_samples(features, layout, pool)
    singular_values = _singular_values(samples)
    if float(singular_values.sum()) == 0:
        raise ValueError("features are all zero: RankMe is undefined")
    return _entropy_rank(singular_values, epsilon)


@dataclass(frozen=True)
class AlphaReQResult:
    """Power-law decay ``alpha`` of the eigenspectrum, the fit's R^2 and its index range."""

    alpha: float
    r2: float
    fit_range: tuple[int, int]


def alpha_req(
    features: Tensor,
    *,
    layout: str = "tokens",
    pool: bool = False,
    fit_range: tuple[int, int] | None = None,
) -> AlphaReQResult:
    """alpha-ReQ: the decay coefficient of the covariance eigenspectrum, lambda_i ∝ i^-alpha.

    Agrawal, Mondal, Ghosh, Richards, "alpha-ReQ: Assessing Representation Quality in
    Self-Supervised Learning by measuring eigenspectrum decay", NeurIPS 2022. alpha is
    the negated slope of a least-squares line through (log i, log lambda_i) over the
    1-based eigenvalue ranks ``fit_range = (first, last)`` (inclusive; default: all
    positive eigenvalues). Smaller alpha means a flatter spectrum.
    """
    samples = as_samples(features, layout, pool)
    centered = samples - samples.mean(dim=0, keepdim=True)
    eigenvalues = (_singular_values(centered) ** 2 / max(samples.shape[0] - 1, 1)).double()
    positive = int((eigenvalues > 0).sum())
    if positive < 3:
        raise ValueError(f"alpha-ReQ needs at least 3 non-zero covariance eigenvalues, got {positive}")
    first, last = fit_range if fit_range is not None else (1, positive)
    if not (1 <= first < last <= positive) or last - first < 2:
        raise ValueError(
            f"fit_range must satisfy 1 <= first < last <= {positive} (non-zero eigenvalues) with at "
            f"least 3 points, got {fit_range}"
        )
    ranks = torch.arange(first, last + 1, dtype=torch.float64)
    x = ranks.log()
    y = eigenvalues[first - 1 : last].log()
    x_centered = x - x.mean()
    slope = float((x_centered * (y - y.mean())).sum() / (x_centered**2).sum())
    fitted = y.mean() + slope * x_centered
    residual = float(((y - fitted) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return AlphaReQResult(alpha=-slope, r2=r2, fit_range=(first, last))


def lidar(
    views: Tensor, *, delta: float = 1e-4, epsilon: float = 1e-8
) -> float:
    """LiDAR: smooth rank of the linear-discriminant matrix between images and their views.

    Thilak, Huang, Saremi, Dinh, Goh, Nakkiran, Susskind, Littwin, "LiDAR: Sensing Linear
    Probing Performance in Joint Embedding SSL Architectures", ICLR 2024. ``views`` is
    (n images, q views, d) embeddings of q augmentations of each image; each image is
    its own class. With between-class covariance S_b and within-class covariance S_w
    (+ delta I), LiDAR = exp(entropy of the normalised eigenvalues of
    S_w^-1/2 S_b S_w^-1/2).
    """
    if not isinstance(views, Tensor) or views.ndim != 3:
        shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"views must have shape (n images, q views, d), got {shape}")
    num_images, num_views, channels = views.shape
    if num_images < 2 or num_views < 2:
        raise ValueError(f"views needs at least 2 images and 2 views per image, got {num_images} x {num_views}")
    check_finite(views, "views")
    data = views.double()
    class_means = data.mean(dim=1)
    grand_mean = class_means.mean(dim=0)
    between_centered = class_means - grand_mean
    between = between_centered.T @ between_centered / (num_images - 1)
    within_centered = (data - class_means.unsqueeze(1)).reshape(-1, channels)
    within = within_centered.T @ within_centered / (num_images * (num_views - 1))
    within = within + delta * torch.eye(channels, dtype=data.dtype)
    eigenvalues, eigenvectors = torch.linalg.eigh(within)
    inverse_sqrt = eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T
    discriminant = inverse_sqrt @ between @ inverse_sqrt
    spectrum = torch.linalg.eigvalsh(discriminant).clamp(min=0)
    return _entropy_rank(spectrum, epsilon)
