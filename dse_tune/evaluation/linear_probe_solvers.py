"""How the linear probe's weights are found: settings, token standardisation, solvers.

The numerical steps of :func:`dse_tune.evaluation.linear_probe.fit_linear_probe` (the
protocol is in that module's docstring): full-batch L-BFGS (the protocol) or AdamW.

Example:
    >>> settings = fit_settings(3, "lbfgs", None, None, None, None, None, 0)
    >>> settings.steps, settings.as_dict()["lr"]
    (100, None)
    >>> mean, std, standardized = standardize(torch.tensor([[[1.0, 5.0], [3.0, 5.0]]]))
    >>> mean.tolist(), std.tolist(), standardized[0, :, 1].tolist()
    ([2.0, 5.0], [1.0, 1.0], [0.0, 0.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dse_tune.arguments import check_int

__all__ = [
    "DEFAULT_ADAMW_LR",
    "DEFAULT_STEPS",
    "DEFAULT_WEIGHT_DECAY",
    "IGNORE_INDEX",
    "OPTIMIZERS",
    "FitSettings",
    "fit_settings",
    "solve",
    "standardize",
]

IGNORE_INDEX = 255
OPTIMIZERS = ("lbfgs", "adamw")
#: Iterations (L-BFGS) or steps (AdamW) of the protocol.
DEFAULT_STEPS = {"lbfgs": 100, "adamw": 300}
DEFAULT_WEIGHT_DECAY = 1e-3
DEFAULT_ADAMW_LR = 0.05


@dataclass(frozen=True)
class FitSettings:
    """The checked settings of one linear probe fit (see ``fit_linear_probe``)."""

    num_classes: int
    optimizer: str
    steps: int
    lr: float
    weight_decay: float
    batch_size: int | None
    pixel_stride: int | None
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """``LinearProbe.settings``: the values used (``lr`` only for AdamW)."""
        return {
            "optimizer": self.optimizer,
            "steps": self.steps,
            "lr": self.lr if self.optimizer == "adamw" else None,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "pixel_stride": self.pixel_stride,
            "seed": self.seed,
        }


def fit_settings(
    num_classes: Any,
    optimizer: str,
    steps: int | None,
    lr: float | None,
    weight_decay: float | None,
    batch_size: int | None,
    pixel_stride: int | None,
    seed: int,
) -> FitSettings:
    """Check the fit's arguments and fill in the protocol's defaults; errors name the argument."""
    check_int("num_classes", num_classes, minimum=1)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    steps = DEFAULT_STEPS[optimizer] if steps is None else steps
    check_int("steps", steps, minimum=1)
    lr = DEFAULT_ADAMW_LR if lr is None else lr
    weight_decay = DEFAULT_WEIGHT_DECAY if weight_decay is None else weight_decay
    if batch_size is not None:
        check_int("batch_size", batch_size, minimum=1)
        if optimizer == "lbfgs":
            raise ValueError("batch_size needs optimizer='adamw': L-BFGS is full-batch")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    return FitSettings(int(num_classes), optimizer, int(steps), lr, weight_decay, batch_size, pixel_stride, seed)


def standardize(tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel ``mean``, ``std`` of ``tokens`` (B, N, d) and the standardised tokens,
    in float64 for float64 input, else float32."""
    dtype = torch.float64 if tokens.dtype == torch.float64 else torch.float32
    data = tokens.detach().to(dtype)
    flat = data.reshape(-1, data.shape[-1])
    mean = flat.mean(0)
    # A constant channel carries no information: std 1 keeps it at 0 after centring.
    std = flat.std(0, unbiased=False)
    std = torch.where(std > 1e-8 * std.max().clamp(min=1e-30), std, torch.ones_like(std))
    return mean, std, (data - mean) / std


def solve(
    standardized: Tensor, targets: Tensor, pixel_index: Tensor, pixel_weight: Tensor, settings: FitSettings
) -> tuple[Tensor, Tensor]:
    """The linear layer (weight (classes, d), bias (classes,)), from zero, that minimises
    the cross-entropy at the training pixels (``targets`` (B, pixels), 255 = ignore)."""
    dtype, device = standardized.dtype, standardized.device
    pixel_index, pixel_weight = pixel_index.to(device), pixel_weight.to(device=device, dtype=dtype)
    num_classes = settings.num_classes
    weight = torch.zeros(num_classes, standardized.shape[-1], dtype=dtype, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=dtype, device=device, requires_grad=True)

    def batch_loss(batch_tokens: Tensor, batch_targets: Tensor) -> Tensor:
        token_logits = batch_tokens @ weight.T + bias  # (B, N, C)
        # Bilinear upsampling at the training pixels: 4 token logits per pixel.
        pixel_logits = (token_logits[:, pixel_index] * pixel_weight[None, :, :, None]).sum(2)
        return F.cross_entropy(pixel_logits.reshape(-1, num_classes), batch_targets.reshape(-1), ignore_index=IGNORE_INDEX)

    with torch.enable_grad():
        if settings.optimizer == "lbfgs":
            _solve_lbfgs(weight, bias, lambda: batch_loss(standardized, targets), settings)
        else:
            _solve_adamw(weight, bias, batch_loss, standardized, targets, settings)
    return weight.detach(), bias.detach()


def _solve_lbfgs(weight: Tensor, bias: Tensor, loss: Any, settings: FitSettings) -> None:
    """Full-batch L-BFGS with a strong-Wolfe line search on ``loss() + wd / 2 * ||W||^2``."""
    steps = settings.steps
    solver = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=steps,
        max_eval=steps + steps // 4,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        solver.zero_grad(set_to_none=True)
        value = loss() + 0.5 * settings.weight_decay * weight.pow(2).sum()
        value.backward()
        return value

    solver.step(closure)


def _solve_adamw(
    weight: Tensor, bias: Tensor, batch_loss: Any, standardized: Tensor, targets: Tensor, settings: FitSettings
) -> None:
    """AdamW with a cosine-decayed learning rate; mini-batches in an order drawn from a
    private generator seeded by ``settings.seed`` (never the global RNG)."""
    steps, batch_size, num_images = settings.steps, settings.batch_size, standardized.shape[0]
    solver = torch.optim.AdamW([weight, bias], lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(solver, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator().manual_seed(int(settings.seed))
    order: list[int] = []
    for _ in range(steps):
        if batch_size is None or batch_size >= num_images:
            batch_tokens, batch_targets = standardized, targets
        else:
            if len(order) < batch_size:
                order.extend(torch.randperm(num_images, generator=generator).tolist())
            chosen, order = order[:batch_size], order[batch_size:]
            index = torch.tensor(chosen, device=standardized.device)
            batch_tokens, batch_targets = standardized[index], targets[index]
        if not bool((batch_targets != IGNORE_INDEX).any()):
            continue  # a mini-batch of unlabelled images has no loss
        loss = batch_loss(batch_tokens, batch_targets)
        solver.zero_grad(set_to_none=True)
        loss.backward()
        solver.step()
        schedule.step()
