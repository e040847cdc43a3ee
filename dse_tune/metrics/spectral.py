"""Singular-value statistics of many small matrices, through Gram eigenvalues.

Singular values of X (r x d) are sqrt(eig(X X^T)) = sqrt(eig(X^T X)): the Gram matrix of
the smaller side turns one SVD per matrix into one batched GEMM and eigensolve, several
times faster. Eigenvalues below ``eps * size * lambda_max`` are rounding noise and count
as zeros (the numerical note in docs/metric.md says what that costs in float32).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

_MIN_BATCH_TO_SPLIT = 8


def _split_over_threads(function, matrices: Tensor) -> list:
    """Apply ``function`` to slices of a CPU batch in parallel Python threads.

    LAPACK solves a batch one small matrix at a time on one core; torch releases the GIL
    inside the call, so slicing the batch over ``torch.get_num_threads()`` threads uses
    every core. Each matrix still goes through the same routine, so results are identical.
    """
    workers = torch.get_num_threads()
    if matrices.device.type != "cpu" or workers < 2 or matrices.shape[0] < _MIN_BATCH_TO_SPLIT:
        return [function(matrices)]
    chunks = matrices.chunk(workers)
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        return list(pool.map(function, chunks))


class _SymmetricEigenvalues(torch.autograd.Function):
    """Eigenvalues of symmetric matrices, with the standard gradient V diag(g) V^T.

    A custom Function so that the threaded solver also serves the regulariser: autograd
    records nothing inside the worker threads, the eigenvectors are kept for backward.
    """

    @staticmethod
    def forward(ctx, matrices: Tensor) -> Tensor:
        if not ctx.needs_input_grad[0]:
            return torch.cat(_split_over_threads(torch.linalg.eigvalsh, matrices))
        parts = _split_over_threads(torch.linalg.eigh, matrices)
        eigenvalues = torch.cat([values for values, _ in parts])
        eigenvectors = torch.cat([vectors for _, vectors in parts])
        ctx.save_for_backward(eigenvectors)
        return eigenvalues

    @staticmethod
    def backward(ctx, grad_eigenvalues: Tensor) -> Tensor:
        (eigenvectors,) = ctx.saved_tensors
        return (eigenvectors * grad_eigenvalues.unsqueeze(-2)) @ eigenvectors.transpose(-1, -2)


def gram_singular_values(matrices: Tensor) -> Tensor:
    """Singular values (M, min(r, d)) of a batch of matrices (M, r, d), ascending order.

    Zero rows (padding) do not change the result. Differentiable; the gradient of a
    singular value treated as zero is zero.
    """
    rows, cols = matrices.shape[-2:]
    if rows <= cols:
        gram = matrices @ matrices.transpose(-1, -2)
    else:
        gram = matrices.transpose(-1, -2) @ matrices
    flat = gram.reshape(-1, *gram.shape[-2:])
    eigenvalues = _SymmetricEigenvalues.apply(flat).reshape(*gram.shape[:-1])
    tolerance = torch.finfo(gram.dtype).eps * max(rows, cols) * eigenvalues[..., -1:].clamp(min=0)
    significant = eigenvalues > tolerance
    # sqrt of a masked-out value would give an infinite gradient at 0: feed it a 1 instead.
    safe = torch.where(significant, eigenvalues, torch.ones_like(eigenvalues))
    return torch.where(significant, safe.sqrt(), torch.zeros_like(eigenvalues))


def normalized_effective_rank(matrices: Tensor) -> Tensor:
    """exp(entropy of normalised singular values) / min(r, d), for each matrix (M, r, d).

    Roy & Vetterli's effective rank, divided by its maximum so that it lies in (0, 1];
    the public DSE code's M_dim estimator. A matrix of zeros gets 0.
    """
    rows, cols = matrices.shape[-2:]
    singular_values = gram_singular_values(matrices)
    total = singular_values.sum(-1, keepdim=True)
    probabilities = singular_values / total.clamp(min=torch.finfo(singular_values.dtype).tiny)
    # 0 * log 0 = 0: zero singular values contribute nothing to the entropy.
    log_terms = torch.where(probabilities > 0, probabilities.clamp(min=1e-38).log(), torch.zeros_like(probabilities))
    entropy = -(probabilities * log_terms).sum(-1)
    rank = entropy.exp() / min(rows, cols)
    return torch.where(total.squeeze(-1) > 0, rank, torch.zeros_like(rank))
