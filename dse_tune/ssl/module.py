"""The one LightningModule design shared by every SSL method.

:class:`DenseSSLModule` owns what all methods share (the config, the DSE regularizer, AdamW
with a warm-up then a cosine schedule, logging, EMA updates, ``dense_tokens``); a method
subclass builds its networks and views and computes its SSL loss (:meth:`DenseSSLModule.ssl_step`).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable

import lightning.pytorch as pl
import torch
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.utils import get_weight_decay_parameters, update_drop_path_rate, update_momentum
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from torch import Tensor, nn

from dse_tune.checkpoints.pretrain_run import build_pretrain_backbone
from dse_tune.features import dense_tokens
from dse_tune.regularizer import DSERegularizer
from dse_tune.ssl.config import VIT_ONLY_METHODS, PretrainConfig


class BackboneMismatchError(ValueError):
    """A method cannot run on the chosen backbone; the message says why."""


def create_backbone(config: PretrainConfig) -> tuple[nn.Module, str]:
    """The timm network of ``config`` (:func:`~dse_tune.checkpoints.pretrain_run.build_pretrain_backbone`)
    and its kind (``"vit"`` or ``"convnet"``)."""
    from timm.models.vision_transformer import VisionTransformer

    model = build_pretrain_backbone(config.to_dict())
    if isinstance(model, VisionTransformer):
        kind = "vit"
    elif hasattr(model, "num_prefix_tokens"):
        raise BackboneMismatchError(
            f"backbone {config.backbone!r} ({type(model).__name__}) is a transformer that is not a timm "
            "VisionTransformer; the SSL methods here wrap timm VisionTransformer (lightly's "
            "MaskedVisionTransformerTIMM) or timm ConvNets"
        )
    elif hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        kind = "convnet"
    else:
        raise BackboneMismatchError(f"backbone {config.backbone!r} ({type(model).__name__}) has no forward_features")

    if kind != "vit" and config.method in VIT_ONLY_METHODS:
        raise BackboneMismatchError(
            f"method {config.method!r} {VIT_ONLY_METHODS[config.method]}, so it needs a ViT backbone; "
            f"{config.backbone!r} is a ConvNet ({type(model).__name__}). Use backbone='vit' or a timm ViT name, "
            "or a method that also runs on ConvNets (dino, mocov3)"
        )
    return model, kind


class TokenBackbone(nn.Module):
    """A timm ViT or ConvNet returning ``(global embedding (B, d), patch tokens (B, N, d))``.

    ViTs run through lightly's ``MaskedVisionTransformerTIMM`` (masking by boolean
    ``mask`` or ``idx_keep``); the global embedding is the CLS token (the mean patch
    token without one). ConvNets give the last stage as tokens and timm's pooled
    ``forward_head(pre_logits=True)`` as the global embedding.

    ``masks_tokens``: whether the method uses lightly's learnable mask token (iBOT). The
    wrapper always creates it; unused (DINO, MoCo v3, MAE's ``idx_keep``) it gets no
    gradient, which DDP rejects, so it is then frozen (still in the state dict).
    """

    def __init__(self, model: nn.Module, kind: str, *, masks_tokens: bool = False) -> None:
        super().__init__()
        self.kind = kind
        if kind == "vit":
            # lightly's wrapper initialises weights MAE-style and the position embedding
            # with fixed 2D sine-cosine values (still learnable).
            self.encoder: nn.Module = MaskedVisionTransformerTIMM(vit=model)
            self.encoder.mask_token.requires_grad_(masks_tokens)
        else:
            self.encoder = model

    @property
    def timm_model(self) -> nn.Module:
        """The plain timm network (for :func:`dse_tune.features.dense_tokens`)."""
        return self.encoder.vit if self.kind == "vit" else self.encoder

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.encoder.vit.num_prefix_tokens) if self.kind == "vit" else 0

    @property
    def embed_dim(self) -> int:
        return int(self.timm_model.embed_dim if self.kind == "vit" else self.timm_model.num_features)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.kind == "vit":
            tokens = self.encoder.encode(images, mask=mask)
            prefix = self.num_prefix_tokens
            patch_tokens = tokens[:, prefix:]
            has_cls = getattr(self.encoder.vit, "has_class_token", prefix > 0)
            global_embedding = tokens[:, 0] if has_cls else patch_tokens.mean(dim=1)
            return global_embedding, patch_tokens
        if mask is not None:
            raise BackboneMismatchError("token masking needs a ViT backbone")
        feature_map = self.encoder.forward_features(images)
        patch_tokens = feature_map.flatten(2).transpose(1, 2)
        return self.encoder.forward_head(feature_map, pre_logits=True), patch_tokens

    def dense_tokens(self, images: Tensor) -> Tensor:
        return dense_tokens(self.timm_model, images, kind=self.kind)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy for momentum (EMA) updates: same weights, no gradients."""
    return copy.deepcopy(module).requires_grad_(False)


class DenseSSLModule(pl.LightningModule):
    """Base LightningModule of the SSL methods (see :mod:`dse_tune.ssl.methods`).

    Subclasses set ``method`` and implement :meth:`build_transform`, :meth:`ssl_step`,
    :attr:`scored_backbone` and, for EMA teachers, :meth:`momentum_pairs`. The batch is
    ``(views, indices)`` from :class:`dse_tune.ssl.views.ViewsDataset`. Logged each step:
    ``train/loss`` (the total), ``train/ssl_loss``, ``train/dse_reg`` (``-beta * DSE``),
    ``train/student_dse`` (the DSE of the student's training tokens, on steps where the
    regularizer computes), ``train/lr``, the teacher momentum and method-specific values.
    A non-finite loss raises ``FloatingPointError``.

    Rebuild from a checkpoint with :func:`dse_tune.ssl.methods.load_checkpoint` (any
    method) or Lightning's ``DINOModule.load_from_checkpoint(path)`` (that method).
    """

    method: str = ""

    def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, PretrainConfig):
            config = PretrainConfig.from_dict(config)
        config.validate()
        if config.method != self.method:
            raise ValueError(f"{type(self).__name__} implements method {self.method!r}, config says {config.method!r}")
        self.config = config
        # Only the config dict goes to the checkpoint: it rebuilds the module exactly.
        self.save_hyperparameters({"config": config.to_dict()})
        self.regularizer = DSERegularizer(
            config.dse_beta,
            every_n_steps=config.dse_every_n_steps,
            max_images=config.dse_max_images,
            seed=config.seed,
            global_batch=config.dse_global_batch,
        )

    # ----------------------------------------------------------- method interface

    def build_transform(self) -> Callable:
        """The lightly multi-view transform (PIL image -> list of view tensors)."""
        raise NotImplementedError

    def ssl_step(self, views: list[Tensor]) -> tuple[Tensor, Tensor, dict[str, float]]:
        """``(ssl_loss, student patch tokens (B', N, d), extra values to log)``."""
        raise NotImplementedError

    @property
    def scored_backbone(self) -> TokenBackbone:
        """The network whose dense tokens DSE scores."""
        raise NotImplementedError

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(student, teacher)`` pairs updated by EMA after each optimizer step."""
        return []

    def student_modules(self) -> list[nn.Module]:
        """Modules trained by the optimizer (teachers are excluded)."""
        teachers = {id(t) for _, t in self.momentum_pairs()}
        return [m for name, m in self.named_children() if id(m) not in teachers and name != "regularizer"]

    def regularizer_computes_next(self) -> bool:
        """:attr:`DSERegularizer.computes_next <dse_tune.regularizer.DSERegularizer.computes_next>`:
        methods skip work the regularizer would ignore."""
        return self.regularizer.computes_next

    # ---------------------------------------------------------------- features

    @torch.no_grad()
    def dense_tokens(self, images: Tensor) -> Tensor:
        """(B, N, d) patch tokens of :attr:`scored_backbone` (prefix tokens dropped)."""
        return self.scored_backbone.dense_tokens(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.dense_tokens(images)

    # ------------------------------------------------------------- schedules

    def _steps_per_epoch(self) -> int:
        """Optimizer steps per epoch, for schedules given in epochs."""
        trainer = self.trainer
        total = max(1, int(trainer.estimated_stepping_batches))
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            return max(1, total // trainer.max_epochs)
        batches = trainer.num_training_batches
        if math.isfinite(batches) and batches > 0:
            return max(1, int(batches) // trainer.accumulate_grad_batches)
        return total  # trained by max_steps only, length of an epoch unknown: one "epoch"

    def _progress_schedule(self, start: float, end: float, step: int) -> float:
        """Cosine from ``start`` (step 0) to ``end`` (last step) over the whole run."""
        max_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return float(cosine_schedule(step=min(max(step, 0), max_steps - 1), max_steps=max_steps, start_value=start, end_value=end))

    # --------------------------------------------------------------- training

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        views = batch[0]
        if isinstance(views, Tensor):
            views = [views]
        ssl_loss, student_patch_tokens, extra = self.ssl_step(list(views))
        computes_dse = self.regularizer_computes_next()
        regularization = self.regularizer(student_patch_tokens)
        loss = ssl_loss + regularization
        if computes_dse and "dse" in self.regularizer.last_components:
            # DSE of the student's training tokens (augmented views, not the probe set).
            extra = {**extra, "train/student_dse": self.regularizer.last_components["dse"]}
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{self.method} loss is {loss.item()} at step {self.global_step} "
                f"(ssl_loss {ssl_loss.item()}, dse_reg {float(regularization)}); lower lr or dse_beta"
            )
        batch_size = views[0].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {
                "train/ssl_loss": ssl_loss.detach(),
                "train/dse_reg": regularization.detach(),
                "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                **extra,
            },
            batch_size=batch_size,
        )
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        pairs = self.momentum_pairs()
        if pairs:
            # global_step already counts the step just taken: the EMA after the first
            # optimizer step uses the initial momentum.
            momentum = self._progress_schedule(self.config.teacher_momentum, 1.0, step=self.trainer.global_step - 1)
            for student, teacher in pairs:
                update_momentum(student, teacher, m=momentum)
            self.log("train/teacher_momentum", momentum, batch_size=1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The restored scheduler would keep the old run's length; drop it so that the
        # schedule spans this fit's total steps. Resuming with the same epochs is
        # exact; resuming with more epochs stretches the cosine to the new total.
        for state in checkpoint.get("lr_schedulers", []):
            for key in ("warmup_epochs", "max_epochs"):
                state.pop(key, None)

    def configure_optimizers(self):
        decay, no_decay = get_weight_decay_parameters(self.student_modules())
        decay = [p for p in decay if p.requires_grad]
        no_decay = [p for p in no_decay if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.config.lr,
        )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_steps = min(total_steps, self.config.warmup_epochs * self._steps_per_epoch())
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup_steps,
            max_epochs=total_steps,
            end_value=self.config.min_lr / self.config.lr,
        )
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


def vit_backbone_pair(
    config: PretrainConfig, model: nn.Module, kind: str, *, masks_tokens: bool = False
) -> tuple[TokenBackbone, TokenBackbone]:
    """Student and EMA teacher with identical weights; drop path on the student only
    (``masks_tokens``: see :class:`TokenBackbone`)."""
    student = TokenBackbone(model, kind, masks_tokens=masks_tokens)
    teacher = frozen_copy(student)
    if kind == "vit" and config.drop_path_rate > 0:
        update_drop_path_rate(student.encoder.vit, drop_path_rate=config.drop_path_rate, mode="uniform")
    return student, teacher


def blur_sigmas(crop_size: int) -> tuple[float, float]:
    """lightly's blur sigmas (0.1-2 px) are meant for 224 px crops; scale them."""
    scale = crop_size / 224.0
    return (0.1 * scale, 2.0 * scale)


def concat(tensors: Iterable[Tensor]) -> Tensor:
    return torch.cat(list(tensors), dim=0)
