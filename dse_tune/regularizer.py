"""DSE as a differentiable loss term: ``loss = ssl_loss + DSERegularizer(beta)(student_tokens)``.

Higher DSE means better dense structure, so the term is ``-beta * DSE`` and minimising the
loss raises DSE (the public regulariser returns DSE unsigned; the paper wants it to rise).

The estimator is the metric's own engine (``dse_components``): k-means runs on detached
tokens (assignments carry no gradient, as in the paper), every other step is differentiable.

Under DDP the default scores each process's local batch, as the public code does.
``global_batch=True`` scores the global batch: the tokens of every process are
all-gathered with their gradient (:func:`gather_with_gradient`), every process computes
the same DSE, and the backward pass sums each process's share of the gradient back to it
(each local gradient is world_size times its slice; DDP's averaging divides by world_size,
so the parameters get exactly the gradient of ``-weight * DSE(global batch)``). What each
mode costs: docs/pretraining.md.
"""

from __future__ import annotations

from typing import Any

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
        global_batch: under ``torch.distributed``, score the tokens of all processes,
            gathered with their gradient; ``max_images`` applies per process, before.

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
        global_batch: bool = False,
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
        self.global_batch = bool(global_batch)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.calls = 0
        #: The DSE components of the last computed call (floats), for logging.
        self.last_components: dict[str, float] = {}

    def extra_repr(self) -> str:
        names = ("weight", "local_clusters", "global_clusters", "group_size", "dim_estimator", "every_n_steps",
                 "global_batch")
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in names)

    @property
    def computes_next(self) -> bool:
        """Whether the next call computes DSE: weight > 0 and not a step skipped by
        ``every_n_steps`` (a training step can skip the work the call would ignore)."""
        return self.weight > 0 and self.calls % self.every_n_steps == 0

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = as_token_tensor(tokens, "tokens", argument="tokens")
        computes = self.computes_next
        self.calls += 1
        if not computes:
            return tokens.new_zeros(())
        if self.max_images is not None:
            tokens = tokens[: self.max_images]
        if self.global_batch:
            tokens = gather_with_gradient(tokens)
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


def gather_with_gradient(tokens: Tensor) -> Tensor:
    """The tokens of every process, concatenated in rank order, differentiable: the
    backward sums every process's gradient of its slice back to it. ``tokens`` itself
    without a process group of more than one process. Every process must pass the same
    shape (DDP batches are equal with ``drop_last``)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return tokens
    return _GatherWithGradient.apply(tokens.contiguous())


class _GatherWithGradient(torch.autograd.Function):
    # torch.distributed.nn.functional.all_gather does the same but is deprecated in
    # recent torch; this is its behaviour on every backend (gloo has no reduce-scatter).

    @staticmethod
    def forward(ctx: Any, tokens: Tensor) -> Tensor:
        import torch.distributed as dist

        ctx.world, ctx.rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(tokens) for _ in range(ctx.world)]
        dist.all_gather(parts, tokens)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> Tensor:
        import torch.distributed as dist

        gradient = gradient.contiguous()
        if dist.get_backend() == "nccl":
            mine = gradient.new_empty(gradient.shape[0] // ctx.world, *gradient.shape[1:])
            dist.reduce_scatter_tensor(mine, gradient, op=dist.ReduceOp.SUM)
            return mine
        dist.all_reduce(gradient, op=dist.ReduceOp.SUM)
        return gradient.chunk(ctx.world, dim=0)[ctx.rank].clone()
