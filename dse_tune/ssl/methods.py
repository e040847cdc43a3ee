"""DINO, iBOT, MAE and MoCo v3 from lightly's pieces on timm backbones.

Every method is a :class:`~dse_tune.ssl.module.DenseSSLModule` (one LightningModule
design). What each scores with DSE (``dense_tokens``) and what feeds the regularizer:

============  ==========================  ===============================================
method        scored by DSE               regularizer input (student patch tokens)
============  ==========================  ===============================================
``dino``      EMA teacher backbone        student, both global views
``ibot``      EMA teacher backbone        student, both global views (block-masked)
``mae``       encoder, unmasked images    encoder on the unmasked image (an extra pass,
                                          only on steps where the regularizer computes)
``mocov3``    momentum encoder backbone   query encoder, both views
============  ==========================  ===============================================

Example:
    >>> from dse_tune.ssl.config import PretrainConfig
    >>> module = build_module(PretrainConfig(method="dino", embed_dim=64, depth=2, num_heads=2))
    >>> module.dense_tokens(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 16, 64])
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss, IBOTPatchLoss
from lightly.models import utils as lightly_utils
from lightly.models.modules import (
    BYOLPredictionHead,
    DINOProjectionHead,
    MaskedVisionTransformerDecoderTIMM,
    MoCoProjectionHead,
)
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from lightly.transforms import DINOTransform, IBOTTransform, MAETransform
from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import linear_warmup_schedule
from torch import Tensor, nn

from dse_tune.checkpoints.pretrain_run import pretrain_config
from dse_tune.checkpoints.read import read_checkpoint
from dse_tune.ssl.config import METHODS, PretrainConfig
from dse_tune.ssl.module import (
    BackboneMismatchError,
    DenseSSLModule,
    TokenBackbone,
    blur_sigmas,
    concat,
    create_backbone,
    frozen_copy,
    vit_backbone_pair,
)


def _dino_heads(config: PretrainConfig, input_dim: int) -> tuple[DINOProjectionHead, DINOProjectionHead]:
    head = functools.partial(DINOProjectionHead, input_dim=input_dim, hidden_dim=config.head_hidden_dim,
                             bottleneck_dim=config.head_bottleneck_dim, output_dim=config.head_output_dim)
    with warnings.catch_warnings():
        # lightly's head uses torch's deprecated weight_norm; nothing a user can change.
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        student = head(freeze_last_layer=config.freeze_last_layer_epochs)
        # A fresh head loaded with the student's weights: deepcopy of weight-normed
        # layers is not supported by every torch version.
        teacher = head()
    teacher.load_state_dict(student.state_dict())
    return student, teacher.requires_grad_(False)


class _TeacherStudentMixin:
    """What DINO and iBOT share: student/teacher backbones and heads (the EMA teacher is
    scored), the CLS-token DINO loss, teacher temperature warm-up, last-layer freezing."""

    config: PretrainConfig
    student_head: DINOProjectionHead

    def build_teacher_student(self, model: nn.Module, kind: str) -> None:
        masks_tokens = self.config.method == "ibot"  # iBOT replaces masked patches by the mask token
        self.student_backbone, self.teacher_backbone = vit_backbone_pair(self.config, model, kind, masks_tokens=masks_tokens)
        self.student_head, self.teacher_head = _dino_heads(self.config, self.student_backbone.embed_dim)

    def dino_loss(self) -> DINOLoss:
        return DINOLoss(
            output_dim=self.config.head_output_dim,
            warmup_teacher_temp=self.config.warmup_teacher_temp,
            teacher_temp=self.config.teacher_temp,
            student_temp=self.config.student_temp,
        )

    @property
    def scored_backbone(self) -> TokenBackbone:
        return self.teacher_backbone

    def momentum_pairs(self):
        return [(self.student_backbone, self.teacher_backbone), (self.student_head, self.teacher_head)]

    def teacher_temperature(self) -> float:
        warmup_steps = self.config.teacher_temp_warmup_epochs * self._steps_per_epoch()
        return float(
            linear_warmup_schedule(
                step=self.trainer.global_step,
                warmup_steps=warmup_steps,
                start_value=self.config.warmup_teacher_temp,
                end_value=self.config.teacher_temp,
            )
        )

    def cls_distillation(self, criterion: DINOLoss, teacher_out: Tensor, student_global_out: Tensor,
                         views: list[Tensor]) -> tuple[Tensor, float]:
        """``(DINO loss, teacher temperature)``: the student's head outputs of the global views
        (given) and of the local crops against the teacher's of the global views."""
        student_out = [student_global_out]
        if len(views) > 2:
            student_local, _ = self.student_backbone(concat(views[2:]))
            student_out.append(self.student_head(student_local))
        temperature = self.teacher_temperature()
        loss = criterion(
            teacher_out=list(teacher_out.chunk(2)),
            student_out=list(torch.cat(student_out).chunk(len(views))),
            teacher_temp=temperature,
        )
        return loss, temperature

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # DINO keeps the prototypes fixed for the first epoch(s): more stable start.
        self.student_head.cancel_last_layer_gradients(self.current_epoch)

    def multi_crop_transform(self, transform_class: type) -> Any:
        c = self.config
        return transform_class(
            global_crop_size=c.resolved_global_crop_size,
            global_crop_scale=tuple(c.global_crop_scale),
            local_crop_size=c.resolved_local_crop_size,
            local_crop_scale=tuple(c.local_crop_scale),
            n_local_views=c.num_local_crops,
            sigmas=blur_sigmas(c.resolved_global_crop_size),
        )


class DINOModule(_TeacherStudentMixin, DenseSSLModule):
    """DINO (Caron et al. 2021): self-distillation of the CLS token over multi-crops (ViTs
    and timm ConvNets; what is scored and regularized: the module docstring)."""

    method = "dino"

    def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
        super().__init__(config)
        self.build_teacher_student(*create_backbone(self.config))
        self.criterion = self.dino_loss()

    def build_transform(self):
        return self.multi_crop_transform(DINOTransform)

    def ssl_step(self, views):
        global_views = concat(views[:2])
        with torch.no_grad():
            teacher_global, _ = self.teacher_backbone(global_views)
            teacher_out = self.teacher_head(teacher_global)
        student_global, student_patch_tokens = self.student_backbone(global_views)
        student_global_out = self.student_head(student_global)
        loss, temperature = self.cls_distillation(self.criterion, teacher_out, student_global_out, views)
        return loss, student_patch_tokens, {"train/teacher_temp": temperature}


class IBOTModule(_TeacherStudentMixin, DenseSSLModule):
    """iBOT (Zhou et al. 2022): DINO on the CLS token plus masked patch distillation.

    Global views are block-masked (lightly's ``random_block_mask``; ``mask_ratio`` is
    the largest masked share of an image, half the images stay unmasked); the student
    predicts the teacher's patch prototypes at masked positions (``IBOTPatchLoss``).
    The CLS and patch heads are shared, as in lightly's benchmark and DINOv2. ViT only.
    """

    method = "ibot"

    def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
        super().__init__(config)
        model, kind = create_backbone(self.config)
        if not getattr(model, "has_class_token", False):
            raise BackboneMismatchError(f"method 'ibot' distils the CLS token; backbone {self.config.backbone!r} has none")
        self.build_teacher_student(model, kind)
        self.cls_criterion = self.dino_loss()
        self.patch_criterion = IBOTPatchLoss(
            output_dim=self.config.head_output_dim,
            teacher_temp=self.config.teacher_temp,
            student_temp=self.config.student_temp,
        )

    def build_transform(self):
        return self.multi_crop_transform(IBOTTransform)

    def _block_mask(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(block mask (B, H, W), token mask (B, prefix + H*W)) for a batch of views."""
        batch_size = images.shape[0]
        patch_size = self.student_backbone.encoder.vit.patch_embed.patch_size
        height, width = images.shape[-2] // patch_size[0], images.shape[-1] // patch_size[1]
        max_ratio = self.config.resolved_mask_ratio
        block_mask = lightly_utils.random_block_mask(
            size=(batch_size, height, width),
            max_image_mask_ratio=max_ratio,
            min_image_mask_ratio=min(0.1, max_ratio),
            # As lightly's iBOT benchmark; at least 1 so that tiny token grids fit.
            min_num_masks_per_block=max(1, (min(height, width) // 3) ** 2),
            device=images.device,
        )
        prefix = self.student_backbone.num_prefix_tokens
        token_mask = block_mask.new_zeros((batch_size, prefix + height * width))
        token_mask[:, prefix:] = block_mask.flatten(start_dim=1)
        return block_mask, token_mask

    def ssl_step(self, views):
        global_views = concat(views[:2])
        block_mask, token_mask = self._block_mask(global_views)
        patch_mask = token_mask[:, self.student_backbone.num_prefix_tokens :]
        with torch.no_grad():
            teacher_cls, teacher_patches = self.teacher_backbone(global_views)
            teacher_cls_out = self.teacher_head(teacher_cls)
            teacher_masked_out = self.teacher_head(teacher_patches[patch_mask])

        student_cls, student_patch_tokens = self.student_backbone(global_views, mask=token_mask)
        student_cls_out = self.student_head(student_cls)
        student_masked_out = self.student_head(student_patch_tokens[patch_mask])
        cls_loss, temperature = self.cls_distillation(
            self.cls_criterion, teacher_cls_out, student_cls_out, views
        )
        patch_loss = self.patch_criterion(
            teacher_out=teacher_masked_out, student_out=student_masked_out, mask=block_mask, teacher_temp=temperature
        )
        extra = {"train/cls_loss": cls_loss.detach(), "train/patch_loss": patch_loss.detach(), "train/teacher_temp": temperature}
        return cls_loss + patch_loss, student_patch_tokens, extra


class MAEModule(DenseSSLModule):
    """MAE (He et al. 2022): reconstruct the pixels of masked patches.

    The encoder sees the visible patches only (``mask_ratio`` of them masked, default
    0.75); a light decoder (lightly's ``MaskedVisionTransformerDecoderTIMM``) predicts
    per-patch normalised pixels of the masked patches. The regularizer needs the tokens of
    the whole image: on steps where it computes, the encoder runs once more on the unmasked
    images. ViT only, with at most one prefix (CLS) token.
    """

    method = "mae"

    def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
        super().__init__(config)
        model, kind = create_backbone(self.config)
        if model.num_prefix_tokens > 1:
            raise BackboneMismatchError(
                f"method 'mae' masks patch tokens by index after a single CLS token; backbone "
                f"{self.config.backbone!r} has {model.num_prefix_tokens} prefix tokens (registers)"
            )
        self.backbone = TokenBackbone(model, kind)
        vit = self.backbone.encoder.vit
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.decoder_embed = nn.Linear(vit.embed_dim, self.config.decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=self.config.decoder_dim,
            depth=self.config.decoder_depth,
            num_heads=self.config.decoder_num_heads,
            num_prefix_tokens=vit.num_prefix_tokens,
        )
        self.prediction_head = nn.Linear(self.config.decoder_dim, self.patch_size**2 * 3)
        self.decoder_embed.apply(init_weights)
        self.prediction_head.apply(init_weights)

    @property
    def scored_backbone(self) -> TokenBackbone:
        return self.backbone

    def build_transform(self):
        c = self.config
        return MAETransform(input_size=c.resolved_global_crop_size, min_scale=c.global_crop_scale[0])

    def ssl_step(self, views):
        images = views[0]
        batch_size = images.shape[0]
        prefix = self.backbone.num_prefix_tokens
        sequence_length = self.decoder.sequence_length
        if images.shape[-1] // self.patch_size * (images.shape[-2] // self.patch_size) + prefix != sequence_length:
            raise ValueError(
                f"MAE views of {tuple(images.shape[-2:])} px do not match the decoder's {sequence_length - prefix} "
                f"patches; set global_crop_size equal to image_size"
            )
        idx_keep, idx_mask = lightly_utils.random_token_mask(
            size=(batch_size, sequence_length),
            mask_ratio=self.config.resolved_mask_ratio,
            mask_class_token=prefix == 0,
            device=images.device,
        )
        encoded = self.backbone.encoder.encode(images, idx_keep=idx_keep)
        decoder_input = self.decoder_embed(encoded)
        full = decoder_input.new_zeros(batch_size, sequence_length, decoder_input.shape[-1])
        full = lightly_utils.set_at_index(full, idx_keep, decoder_input)
        decoded = self.decoder(full, idx_mask=idx_mask)
        prediction = self.prediction_head(lightly_utils.get_at_index(decoded, idx_mask))

        patches = lightly_utils.patchify(images, self.patch_size)
        # Per-patch normalised targets (MAE's norm_pix_loss) give better features.
        target = lightly_utils.normalize_mean_var(lightly_utils.get_at_index(patches, idx_mask - prefix))
        loss = F.mse_loss(prediction, target)

        if self.regularizer_computes_next():
            _, student_patch_tokens = self.backbone(images)
        else:
            # The regularizer ignores its input on this step: skip the extra pass.
            student_patch_tokens = encoded[:, prefix:]
        return loss, student_patch_tokens, {}


class MoCoV3Module(DenseSSLModule):
    """MoCo v3 (Chen et al. 2021): contrastive query/momentum-key learning.

    Projection head: lightly's ``MoCoProjectionHead`` (3 layers, batch norm);
    prediction head: lightly's ``BYOLPredictionHead`` (2 layers, batch norm); views:
    lightly's BYOL transform (asymmetric blur/solarisation, as in MoCo v3). Loss:
    symmetric InfoNCE with temperature ``moco_temperature``, scaled by
    ``2 * temperature`` as in the paper. Runs on ViTs and timm ConvNets.
    """

    method = "mocov3"

    def __init__(self, config: PretrainConfig | dict[str, Any]) -> None:
        super().__init__(config)
        c = self.config
        self.backbone, self.momentum_backbone = vit_backbone_pair(c, *create_backbone(c))
        self.projection_head = MoCoProjectionHead(
            input_dim=self.backbone.embed_dim,
            hidden_dim=c.head_hidden_dim,
            output_dim=c.head_output_dim,
            num_layers=3,
            batch_norm=True,
        )
        self.momentum_projection_head = frozen_copy(self.projection_head)
        self.prediction_head = BYOLPredictionHead(
            input_dim=c.head_output_dim, hidden_dim=c.head_hidden_dim, output_dim=c.head_output_dim
        )

    @property
    def scored_backbone(self) -> TokenBackbone:
        return self.momentum_backbone

    def momentum_pairs(self):
        return [(self.backbone, self.momentum_backbone), (self.projection_head, self.momentum_projection_head)]

    def build_transform(self):
        c = self.config
        size = c.resolved_global_crop_size
        common = dict(input_size=size, min_scale=c.global_crop_scale[0], sigmas=blur_sigmas(size))
        return BYOLTransform(BYOLView1Transform(**common), BYOLView2Transform(**common))

    def _contrastive(self, query: Tensor, key: Tensor) -> Tensor:
        query = F.normalize(query, dim=1)
        key = F.normalize(key, dim=1)
        logits = query @ key.T / self.config.moco_temperature
        labels = torch.arange(query.shape[0], device=query.device)
        return F.cross_entropy(logits, labels) * (2 * self.config.moco_temperature)

    def ssl_step(self, views):
        if len(views) != 2:
            raise ValueError(f"mocov3 needs exactly 2 views per image, got {len(views)}")
        both = concat(views)
        global_embedding, student_patch_tokens = self.backbone(both)
        queries = self.prediction_head(self.projection_head(global_embedding)).chunk(2)
        with torch.no_grad():
            key_embedding, _ = self.momentum_backbone(both)
            keys = self.momentum_projection_head(key_embedding).chunk(2)
        loss = self._contrastive(queries[0], keys[1]) + self._contrastive(queries[1], keys[0])
        return loss, student_patch_tokens, {}


METHOD_MODULES: dict[str, type[DenseSSLModule]] = {
    module.method: module for module in (DINOModule, IBOTModule, MAEModule, MoCoV3Module)
}
assert set(METHOD_MODULES) == set(METHODS)


def build_module(config: PretrainConfig | dict[str, Any]) -> DenseSSLModule:
    """The LightningModule of ``config.method``."""
    if not isinstance(config, PretrainConfig):
        config = PretrainConfig.from_dict(config)
    config.validate()
    return METHOD_MODULES[config.method](config)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, trust: bool = False
) -> DenseSSLModule:
    """Rebuild a module in eval mode from a checkpoint of :func:`dse_tune.ssl.pretrain.pretrain`
    (or of Lightning for any :class:`DenseSSLModule`): from the config it stores, with its
    weights loaded strictly; the file is read weights-only unless ``trust``
    (:func:`dse_tune.checkpoints.read_checkpoint`)."""
    checkpoint = read_checkpoint(path, trust=trust, map_location=map_location)
    module = build_module(pretrain_config(checkpoint, path))
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()
