"""The linear probe: labelled semantic segmentation on FROZEN dense tokens (mIoU).

Validation only: dse_tune never needs labels to select a checkpoint. The linear probe
is the labelled yardstick that ``dse-tune validate`` compares the label-free scores
with. (Not to be confused with a run's *probe set*, the fixed unlabelled images its DSE
monitor scores.) Pure torch (no Lightning, Ray or Optuna).

Protocol (fixed for every checkpoint, so that mIoU differences come from the features;
``docs/validation.md`` section 2 gives the reasons and the measurements):

1. Tokens (B, N, d) on an ``h x w`` grid, standardised per channel with the TRAIN
   tokens' mean and std (one optimiser setting then fits every checkpoint's scale).
2. One zero-initialised linear layer (d -> classes) per token; logits upsampled
   bilinearly (``align_corners=False``) to the masks; cross-entropy with
   ``ignore_index=255`` on a fixed sub-grid of two pixels per token along each axis
   (:func:`~dse_tune.evaluation.token_grid.training_pixels`); evaluation uses every pixel.
3. Full-batch L-BFGS (strong-Wolfe, history 20, at most 100 iterations) on the mean
   pixel loss + ``1e-3 / 2 * ||W||^2``: converged, so it measures separability, not how
   hard the optimisation is. Nothing is random. ``optimizer="adamw"`` (cosine-decayed,
   mini-batches from a private generator seeded by ``seed``) is for sets too large for
   a full batch; it is not the protocol.
4. Scores from the confusion matrix over ALL evaluated pixels (255 left out): per-class
   IoU ``TP / (TP + FP + FN)`` where the union is non-empty (else NaN,
   ``LinearProbeResult.absent_classes``), mIoU their mean, pixel accuracy ``trace / total``.

Example:
    >>> import torch
    >>> token_classes = torch.arange(4).repeat(2, 4, 1) % 3  # (2 images, 4x4 tokens): class by column
    >>> masks = token_classes.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (2, 16, 16) pixels
    >>> tokens = torch.nn.functional.one_hot(token_classes.reshape(2, 16), 3).float()  # (2, 16, 3)
    >>> linear_probe = fit_linear_probe(tokens, masks, num_classes=3)
    >>> result = evaluate_linear_probe(linear_probe, tokens, masks)
    >>> linear_probe.grid, round(result.miou, 3), result.pixel_accuracy
    ((4, 4), 1.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dse_tune.degradation import finite_or_none as finite
from dse_tune.evaluation.linear_probe_solvers import (
    DEFAULT_ADAMW_LR,
    DEFAULT_STEPS,
    DEFAULT_WEIGHT_DECAY,
    IGNORE_INDEX,
    OPTIMIZERS,
    fit_settings,
    solve,
    standardize,
)
from dse_tune.evaluation.token_grid import check_grid, infer_grid, pixel_logits, training_pixels

__all__ = [
    "DEFAULT_ADAMW_LR",
    "DEFAULT_STEPS",
    "DEFAULT_WEIGHT_DECAY",
    "IGNORE_INDEX",
    "OPTIMIZERS",
    "LinearProbe",
    "LinearProbeResult",
    "confusion_matrix",
    "evaluate_linear_probe",
    "fit_linear_probe",
    "infer_grid",
    "linear_probe_model",
    "scores_from_confusion",
    "training_pixels",
]

# Images per chunk when predicting: bounds the memory of upsampled logits.
_PREDICT_CHUNK = 64


@dataclass(frozen=True)
class LinearProbeResult:
    """Scores of a linear probe on an evaluation set.

    Attributes:
        miou: mean IoU over the classes with a non-empty union (NaN if none).
        pixel_accuracy: correctly classified / evaluated pixels.
        per_class_iou: IoU per class index (NaN where the union is empty).
        confusion: (classes, classes) int64 counts, rows = ground truth, columns =
            prediction, over the evaluated pixels.
        num_pixels: evaluated pixels (labels other than 255).
    """

    miou: float
    pixel_accuracy: float
    per_class_iou: tuple[float, ...]
    confusion: Tensor = field(repr=False)
    num_pixels: int = 0

    @property
    def evaluated_classes(self) -> tuple[int, ...]:
        """Classes whose IoU is defined (non-empty union): the ones averaged by ``miou``."""
        return tuple(i for i, value in enumerate(self.per_class_iou) if not math.isnan(value))

    @property
    def absent_classes(self) -> tuple[int, ...]:
        """Classes neither in the ground truth nor predicted: left out of ``miou``."""
        return tuple(i for i, value in enumerate(self.per_class_iou) if math.isnan(value))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as None); the confusion matrix as nested lists."""
        return {
            "miou": finite(self.miou),
            "pixel_accuracy": finite(self.pixel_accuracy),
            "per_class_iou": [finite(v) for v in self.per_class_iou],
            "evaluated_classes": list(self.evaluated_classes),
            "num_pixels": self.num_pixels,
            "confusion": self.confusion.tolist(),
        }


@dataclass
class LinearProbe:
    """A fitted linear probe: train-token statistics, the linear layer and the token grid.

    Attributes:
        mean, std: (d,) per-channel statistics of the training tokens.
        weight: (classes, d); bias: (classes,).
        grid: (h, w) token grid, ``h * w = N``.
        train_loss: mean cross-entropy over every labelled training pixel after the
            fit (all pixels, not only the training sub-grid; without the L2 term).
        settings: the values used (optimizer, steps, lr, weight_decay, batch_size,
            pixel_stride, seed).
    """

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor
    grid: tuple[int, int]
    num_classes: int
    train_loss: float = math.nan
    settings: dict[str, Any] = field(default_factory=dict)

    def logits(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        """Class logits (B, classes, H, W) at pixel resolution ``size = (H, W)``."""
        tokens = _check_tokens(tokens)
        if tokens.shape[-1] != self.weight.shape[1]:
            raise ValueError(
                f"tokens have {tokens.shape[-1]} channels but the linear probe was fitted on {self.weight.shape[1]}"
            )
        check_grid(self.grid, tokens.shape[1])
        standardized = (tokens.to(self.mean.dtype) - self.mean) / self.std
        return pixel_logits(standardized, self.weight, self.bias, self.grid, size)

    @torch.no_grad()
    def predict(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        """Predicted class per pixel (B, H, W), int64."""
        return torch.cat(
            [self.logits(tokens[i : i + _PREDICT_CHUNK], size).argmax(1) for i in range(0, tokens.shape[0], _PREDICT_CHUNK)]
        )


def _check_tokens(tokens: Any, name: str = "tokens") -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 3:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"{name} must be a (B, N, d) tensor of dense tokens, got {shape}")
    if not tokens.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tokens.dtype}")
    if tokens.shape[0] < 1 or tokens.shape[1] < 1 or tokens.shape[2] < 1:
        raise ValueError(f"{name} is empty: shape {tuple(tokens.shape)}")
    if not bool(torch.isfinite(tokens).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return tokens


def _check_masks(masks: Any, tokens: Tensor, num_classes: int, name: str = "masks") -> Tensor:
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be a (B, H, W) tensor of class indices, got {shape}")
    if masks.is_floating_point() or masks.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {masks.dtype}")
    if masks.shape[0] != tokens.shape[0]:
        raise ValueError(f"{name} holds {masks.shape[0]} masks but the tokens hold {tokens.shape[0]} images")
    masks = masks.long()
    labelled = masks != IGNORE_INDEX
    bad = labelled & ((masks < 0) | (masks >= num_classes))
    if bool(bad.any()):
        values = sorted(set(masks[bad].unique().tolist()))[:10]
        raise ValueError(
            f"{name} holds label(s) {values} outside 0..{num_classes - 1} (num_classes={num_classes}); "
            f"only {IGNORE_INDEX} is allowed besides the classes (it means ignore)"
        )
    if not bool(labelled.any()):
        raise ValueError(f"{name} has no labelled pixel: every pixel is {IGNORE_INDEX} (ignore)")
    return masks


def fit_linear_probe(
    tokens: Tensor,
    masks: Tensor,
    num_classes: int,
    *,
    grid: tuple[int, int] | None = None,
    optimizer: str = "lbfgs",
    steps: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    pixel_stride: int | None = None,
    seed: int = 0,
) -> LinearProbe:
    """Fit the linear segmentation probe of the module docstring on frozen tokens.

    Args:
        tokens: (B, N, d) dense tokens of the training images (detached; not modified).
        masks: (B, H, W) integer class indices, 255 = ignore.
        num_classes: number of classes; labels must lie in ``0..num_classes-1`` or be 255.
        grid: (h, w) token grid with ``h * w = N`` in raster order; None infers it from
            the masks' aspect ratio (:func:`infer_grid`).
        optimizer: ``"lbfgs"`` (the protocol: full batch, strong-Wolfe line search) or
            ``"adamw"`` (cosine-decayed learning rate; mini-batches with ``batch_size``).
        steps: L-BFGS iterations (default 100) or AdamW steps (default 300).
        lr: AdamW's learning rate (default 0.05); L-BFGS uses 1 with its line search.
        weight_decay: L-BFGS: coefficient of ``weight_decay / 2 * ||W||^2`` added to the
            mean pixel loss (default 1e-3; the bias is not penalised); AdamW: its
            decoupled weight decay (default 1e-3).
        batch_size: AdamW only: images per step; None uses all of them every step.
        pixel_stride: stride of the training pixel sub-grid (:func:`training_pixels`);
            None: two pixels per token along each axis; 1: every pixel.
        seed: seeds the private generator that orders AdamW mini-batches (the global
            RNG is never used; nothing else is random).
    """
    tokens = _check_tokens(tokens)
    settings = fit_settings(num_classes, optimizer, steps, lr, weight_decay, batch_size, pixel_stride, seed)
    masks = _check_masks(masks, tokens, settings.num_classes)
    size = (int(masks.shape[1]), int(masks.shape[2]))
    grid = infer_grid(tokens.shape[1], size) if grid is None else check_grid(tuple(grid), tokens.shape[1])
    with torch.no_grad():
        mean, std, standardized = standardize(tokens)
        rows, cols, pixel_index, pixel_weight = training_pixels(grid, size, pixel_stride)
        device = tokens.device
        targets = masks[:, rows.to(device)][:, :, cols.to(device)].reshape(tokens.shape[0], -1)
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError(
            f"masks have no labelled pixel on the training sub-grid (pixel_stride={pixel_stride}); "
            "lower pixel_stride"
        )
    weight, bias = solve(standardized, targets, pixel_index, pixel_weight, settings)
    linear_probe = LinearProbe(
        mean=mean, std=std, weight=weight, bias=bias, grid=grid, num_classes=settings.num_classes,
        settings=settings.as_dict(),
    )
    with torch.no_grad():
        linear_probe.train_loss = _mean_loss(linear_probe, tokens, masks)
    if not math.isfinite(linear_probe.train_loss):
        raise FloatingPointError(
            f"the linear probe's training loss is not finite ({linear_probe.train_loss}); check the tokens' scale"
        )
    return linear_probe


def _mean_loss(linear_probe: LinearProbe, tokens: Tensor, masks: Tensor) -> float:
    """Cross-entropy over all labelled pixels, computed in chunks."""
    total, count = 0.0, 0
    size = (int(masks.shape[1]), int(masks.shape[2]))
    for start in range(0, tokens.shape[0], _PREDICT_CHUNK):
        chunk_masks = masks[start : start + _PREDICT_CHUNK]
        labelled = int((chunk_masks != IGNORE_INDEX).sum())
        if labelled == 0:
            continue
        logits = linear_probe.logits(tokens[start : start + _PREDICT_CHUNK], size)
        total += float(F.cross_entropy(logits, chunk_masks, ignore_index=IGNORE_INDEX, reduction="sum"))
        count += labelled
    return total / count


def confusion_matrix(predictions: Tensor, masks: Tensor, num_classes: int) -> Tensor:
    """(classes, classes) int64 counts (rows: ground truth, columns: prediction) over
    the pixels whose label is not 255."""
    labelled = masks != IGNORE_INDEX
    truth = masks[labelled].long()
    predicted = predictions[labelled].long()
    return torch.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def scores_from_confusion(confusion: Tensor) -> LinearProbeResult:
    """mIoU, pixel accuracy and per-class IoU from a confusion matrix (see the module
    docstring: classes with an empty union are NaN and left out of the mean)."""
    confusion = confusion.to(torch.int64)
    counts = confusion.double()
    true_positive = counts.diagonal()
    union = counts.sum(0) + counts.sum(1) - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, math.nan))
    defined = ~torch.isnan(iou)
    total = counts.sum()
    return LinearProbeResult(
        miou=float(iou[defined].mean()) if bool(defined.any()) else math.nan,
        pixel_accuracy=float(true_positive.sum() / total) if total > 0 else math.nan,
        per_class_iou=tuple(float(v) for v in iou),
        confusion=confusion,
        num_pixels=int(total),
    )


def evaluate_linear_probe(linear_probe: LinearProbe, tokens: Tensor, masks: Tensor) -> LinearProbeResult:
    """Score ``linear_probe`` on evaluation tokens (B, N, d) and masks (B, H, W), 255 = ignore.

    The masks may have another resolution than the training masks: logits are
    upsampled to theirs. The confusion matrix is accumulated over all images.
    """
    tokens = _check_tokens(tokens)
    masks = _check_masks(masks, tokens, linear_probe.num_classes)
    size, classes = (int(masks.shape[1]), int(masks.shape[2])), linear_probe.num_classes
    # Chunk by chunk: the per-pixel predictions of a whole evaluation set at full
    # resolution would not bound the memory (_PREDICT_CHUNK).
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    for start in range(0, tokens.shape[0], _PREDICT_CHUNK):
        chunk = slice(start, start + _PREDICT_CHUNK)
        confusion += confusion_matrix(linear_probe.predict(tokens[chunk], size), masks[chunk], classes).cpu()
    return scores_from_confusion(confusion)


def linear_probe_model(
    model: Any,
    train_set: Any,
    test_set: Any,
    num_classes: int,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    **fit_kwargs: Any,
) -> LinearProbeResult:
    """Fit the linear probe on ``model``'s dense tokens of ``train_set``; score it on ``test_set``.

    Args:
        model: anything :func:`dse_tune.features.dense_tokens` reads (a timm ViT or
            ConvNet, a :mod:`dse_tune.ssl` module, a callable ``images -> (B, N, d)``);
            used frozen, in eval mode when it is a module (its mode is restored).
        train_set, test_set: labelled images, e.g. :func:`dse_tune.data.build_probe_set`
            of a dataset with masks (any object with ``images`` (B, 3, H, W) and
            ``masks`` (B, H, W)).
        fit_kwargs: :func:`fit_linear_probe` settings (``steps``, ``lr``, ...).
    """
    for name, images in (("train_set", train_set), ("test_set", test_set)):
        if getattr(images, "masks", None) is None:
            source = getattr(images, "source", type(images).__name__)
            raise ValueError(f"{name} ({source}) has no masks; the linear probe needs labelled images")
    train_tokens, test_tokens = frozen_tokens(model, (train_set.images, test_set.images), device, batch_size)
    linear_probe = fit_linear_probe(train_tokens, train_set.masks, num_classes, **fit_kwargs)
    return evaluate_linear_probe(linear_probe, test_tokens, test_set.masks)


def frozen_tokens(model: Any, image_sets: Sequence[torch.Tensor], device: str, batch_size: int) -> list[torch.Tensor]:
    """Dense tokens (float32, on the CPU) of each image set, the model in eval mode; every
    module's train/eval mode is restored afterwards, whatever happens."""
    from dse_tune.features import dense_tokens_batched

    modes = {module: module.training for module in model.modules()} if isinstance(model, torch.nn.Module) else {}
    if modes:
        model.eval()
    try:
        return [dense_tokens_batched(model, images.to(device), batch_size=batch_size).float().cpu()
                for images in image_sets]
    finally:
        for module, training in modes.items():
            module.training = training
