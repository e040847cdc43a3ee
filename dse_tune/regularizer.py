"""DSE as a differentiable loss term: ``loss = ssl_loss + DSERegularizer(beta)(student_tokens)``.

Sign and meaning: higher DSE means better dense structure, so the term returned is
``-beta * DSE``; minimising the total loss raises DSE. (The public regulariser returns
DSE unsigned; the paper wants DSE to rise, which is what this sign does.)

The estimator is the metric's own engine (``dse_tune.metrics.dse_metric.dse_components``):
k-means runs on detached tokens (cluster assignments carry no gradient, as in the
paper), every other step (cluster means, spreads via Gram eigenvalues, distances to
other centroids, effective rank) is differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dse_tune.metrics.dse_metric import DIM_ESTIMATORS, check_cluster_sizes, dse_components
from dse_tune.metrics.validation import as_token_tensor, check_positive_int


class DSERegularizer(nn.Module):
    """``-weight * DSE(tokens)`` for tokens (B, N, d), differentiable in the tokens.

    Args:
        weight: beta >= 0. 0 returns a zero tensor and computes nothing.
        local_clusters, global_clusters, group_size, normalize: as in ``dse_tune.dse``.
        dim_estimator: M_dim estimator, ``"per_position"`` (the metric's, default, so the
            regulariser pushes on the same number that is monitored) or ``"all_tokens"``
            (the public regulariser's variant).
        every_n_steps: compute the term on one call in n and return 0 on the others (the
            effective weight is then about weight / n).
        max_images: use only the first ``max_images`` images of the batch (batches are
            already shuffled), to bound the cost.
        seed: seeds the module's private generator; the global RNG is never used, so
            masking and dropout keep their own random streams.

    Example:
        >>> import torch
        >>> from dse_tune import DSERegularizer
        >>> regularizer = DSERegularizer(weight=0.1, global_clusters=8)
        >>> tokens = torch.randn(8, 16, 32, requires_grad=True)
        >>> loss = regularizer(tokens)
        >>> loss.backward()
        >>> bool(tokens.grad.abs().sum() > 0)
        True
    """

    def __init__(
        self,
        weight: float,
        *,
        local_clusters: int = 3,
        global_clusters: int = 24,
        group_size: int = 8,
        normalize: bool = True,
        dim_estimator: str = "per_position",
        every_n_steps: int = 1,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"weight must be a number >= 0, got {weight!r}")
        if dim_estimator not in DIM_ESTIMATORS:
            raise ValueError(f"dim_estimator must be one of {DIM_ESTIMATORS}, got {dim_estimator!r}")
        self.weight = float(weight)
        self.local_clusters = check_positive_int(local_clusters, "local_clusters")
        self.global_clusters = check_positive_int(global_clusters, "global_clusters")
        self.group_size = check_positive_int(group_size, "group_size")
        self.every_n_steps = check_positive_int(every_n_steps, "every_n_steps")
        self.max_images = None if max_images is None else check_positive_int(max_images, "max_images", minimum=2)
        self.normalize = normalize
        self.dim_estimator = dim_estimator
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.calls = 0
        #: The DSE components of the last computed call (floats), for logging.
        self.last_components: dict[str, float] = {}

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, local_clusters={self.local_clusters}, global_clusters={self.global_clusters}, "
            f"group_size={self.group_size}, dim_estimator={self.dim_estimator!r}, every_n_steps={self.every_n_steps}"
        )

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = as_token_tensor(tokens, "tokens", argument="tokens")
        call = self.calls
        self.calls += 1
        if self.weight == 0 or call % self.every_n_steps:
            return tokens.new_zeros(())
        if self.max_images is not None:
            tokens = tokens[: self.max_images]
        num_images, num_tokens, _ = tokens.shape
        check_cluster_sizes(num_images, num_tokens, self.local_clusters, self.global_clusters, self.group_size)
        # Spectral steps are ill-conditioned in half precision: always float32 or wider.
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            parts = dse_components(
                tokens.float() if tokens.dtype != torch.float64 else tokens,
                local_clusters=self.local_clusters,
                global_clusters=self.global_clusters,
                group_size=self.group_size,
                normalize=self.normalize,
                generator=self.generator,
                dim_estimator=self.dim_estimator,
            )
            score = parts["inter"] - (parts["intra_image"] + parts["intra_batch"]) / 2 + parts["dim"]
        self.last_components = {name: float(value.detach()) for name, value in parts.items()}
        self.last_components["dse"] = float(score.detach())
        return -self.weight * score
