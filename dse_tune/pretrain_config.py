"""PretrainConfig: everything that defines a pretraining run, saved as ``config.json``.

One flat dataclass, so that a sweep or ``--set`` sets any field by name and the run
folder's ``config.json`` rebuilds the model of any of its checkpoints. Plain data in the
core (search spaces check their fields against it); every value is typed from the field
declarations by :mod:`dse_tune.typed_config`, whatever its source.

Example:
    >>> PretrainConfig.from_dict({"lr": "1E-4", "probe_image_size": "96x128"}).lr
    0.0001
    >>> PretrainConfig.from_dict({"lr": "fast"})
    Traceback (most recent call last):
    ...
    dse_tune.typed_config.ConfigValueError: lr: expected a number, got 'fast' (a string)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dse_tune.typed_config import PARSE, parse_image_size, read_config_file, typed_fields

METHODS = ("dino", "ibot", "mae", "mocov3")
#: Lightning precisions a run may use ("32" is Lightning's short name of "32-true").
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
# Methods that mask patch tokens need a ViT; the others also run on a timm ConvNet.
VIT_ONLY_METHODS = {"ibot": "masks patch tokens (masked image modelling)", "mae": "masks patch tokens and reconstructs them"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _precision_name(value: Any) -> str:
    """YAML and ``--set`` read ``precision: 32`` as a number: Lightning's name is the text."""
    if _is_int(value):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string such as '32-true' or 'bf16-mixed', got {value!r}")
    return value


@dataclass
class PretrainConfig:
    """Settings of one pretraining run. ``None`` means "the method's default".

    Model:
        method: ``dino``, ``ibot``, ``mae`` or ``mocov3``.
        backbone: ``"vit"`` builds a timm ``VisionTransformer`` from ``image_size``,
            ``patch_size``, ``embed_dim``, ``depth`` and ``num_heads``; any other value
            is a timm model name (``"vit_small_patch16_224"``, ``"resnet18"``, ...)
            created with ``pretrained=False`` at ``image_size``.
        image_size, patch_size, embed_dim, depth, num_heads, drop_path_rate: the ViT.
    Optimisation:
        epochs, batch_size, lr (peak, after warm-up), min_lr (end of the cosine),
        weight_decay, warmup_epochs, gradient_clip_val (None = off).
    Heads and losses:
        head_hidden_dim, head_bottleneck_dim, head_output_dim (DINO/iBOT prototypes,
        MoCo v3 output dim), teacher_momentum (start of the cosine schedule to 1; DINO,
        iBOT, MoCo v3), teacher_temp, warmup_teacher_temp, teacher_temp_warmup_epochs,
        student_temp (DINO, iBOT), freeze_last_layer_epochs (DINO, iBOT),
        moco_temperature, mask_ratio (MAE: share of masked patches, default 0.75;
        iBOT: largest masked share of an image, default 0.5), decoder_dim,
        decoder_depth, decoder_num_heads (MAE).
    Views:
        global_crop_size (default image_size), global_crop_scale, local_crop_size
        (default image_size // 2 rounded down to a multiple of patch_size),
        local_crop_scale, num_local_crops (DINO, iBOT).
    DSE:
        dse_beta: regularizer weight (loss = ssl_loss - dse_beta * DSE(student patch
        tokens)); dse_every_n_steps, dse_max_images: its cost controls;
        dse_global_batch: under DDP, score the global batch instead of each device's
        (docs/pretraining.md). eval_every_n_epochs: DSE evaluation (and checkpoint) period.
        probe_size: number of probe images; probe_image_size: their size, ``N``, ``HxW``
        or ``native`` (:func:`dse_tune.data.build_probe_set`), default ``image_size``
        (``config.json`` records it resolved); probe_seed: seed of the DSE k-means.
        early_stop: stop when the degradation rule says so; degradation: keyword
        arguments of ``dse_tune.degradation.DegradationRule``.
    Data:
        data: ``"synthetic"`` or a folder; splits: split names or None;
        synthetic_size: number of synthetic scenes; num_workers: data loader workers.
    Devices (``lightning.pytorch.Trainer``'s): accelerator (``"auto"``, ``"cpu"``, ``"gpu"``,
        ...); devices (a count, ``"auto"``, -1 (all) or a list of indices); strategy (any
        Lightning strategy, ``"ddp"`` on several GPUs); precision (:data:`PRECISIONS`;
        ``"16-mixed"`` on CUDA only). DSE is always computed in float32.
    seed: seeds Lightning (weights, augmentations) and the synthetic scenes.
    """

    method: str = "dino"
    backbone: str = "vit"
    image_size: int = 32
    patch_size: int = 8
    embed_dim: int = 96
    depth: int = 3
    num_heads: int = 3
    drop_path_rate: float = 0.0

    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.04
    warmup_epochs: int = 1
    gradient_clip_val: float | None = 3.0

    head_hidden_dim: int = 256
    head_bottleneck_dim: int = 64
    head_output_dim: int = 1024
    teacher_momentum: float = 0.996
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup_epochs: int = 0
    student_temp: float = 0.1
    freeze_last_layer_epochs: int = 1
    moco_temperature: float = 0.2
    mask_ratio: float | None = None
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_num_heads: int = 2

    global_crop_size: int | None = None
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crop_size: int | None = None
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    num_local_crops: int = 2

    dse_beta: float = 0.0
    dse_every_n_steps: int = 1
    dse_max_images: int | None = None
    dse_global_batch: bool = False
    eval_every_n_epochs: int = 1
    probe_size: int = 64
    probe_image_size: int | tuple[int, int] | str | None = field(default=None, metadata={PARSE: parse_image_size})
    probe_seed: int = 0
    early_stop: bool = False
    degradation: dict[str, Any] = field(default_factory=dict)

    data: str = "synthetic"
    splits: tuple[str, ...] | None = None
    synthetic_size: int = 512
    num_workers: int = 0
    seed: int = 0

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str = field(default="32-true", metadata={PARSE: _precision_name})

    @property
    def resolved_global_crop_size(self) -> int:
        return self.global_crop_size or self.image_size

    @property
    def resolved_local_crop_size(self) -> int:
        if self.local_crop_size:
            return self.local_crop_size
        return max(self.patch_size, (self.image_size // 2) // self.patch_size * self.patch_size)

    @property
    def resolved_probe_image_size(self) -> tuple[int, int] | str:
        """``(H, W)`` or ``"native"``: ``probe_image_size``, else the training ``image_size``."""
        return parse_image_size(self.probe_image_size if self.probe_image_size is not None else self.image_size)

    @property
    def resolved_mask_ratio(self) -> float:
        if self.mask_ratio is not None:
            return self.mask_ratio
        return 0.75 if self.method == "mae" else 0.5

    @property
    def uses_custom_vit(self) -> bool:
        return self.backbone == "vit"

    def validate(self) -> "PretrainConfig":
        """Raise ValueError naming the first field with an unusable value."""
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        positive = (
            "image_size", "patch_size", "embed_dim", "depth", "num_heads", "epochs", "batch_size",
            "head_hidden_dim", "head_bottleneck_dim", "head_output_dim", "decoder_dim", "decoder_depth",
            "decoder_num_heads", "dse_every_n_steps", "eval_every_n_epochs", "probe_size", "synthetic_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "student_temp", "teacher_temp", "warmup_teacher_temp", "moco_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("min_lr", "weight_decay", "dse_beta", "drop_path_rate", "warmup_epochs",
                     "teacher_temp_warmup_epochs", "freeze_last_layer_epochs", "num_local_crops", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.warmup_teacher_temp > self.teacher_temp:
            raise ValueError(
                f"warmup_teacher_temp ({self.warmup_teacher_temp}) must be <= teacher_temp ({self.teacher_temp})"
            )
        if not 0.0 <= self.teacher_momentum <= 1.0:
            raise ValueError(f"teacher_momentum must be in [0, 1], got {self.teacher_momentum!r}")
        if not 0.0 < self.resolved_mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio!r}")
        if self.dse_max_images is not None and self.dse_max_images < 1:
            raise ValueError(f"dse_max_images must be None or >= 1, got {self.dse_max_images!r}")
        if self.gradient_clip_val is not None and self.gradient_clip_val <= 0:
            raise ValueError(f"gradient_clip_val must be None or > 0, got {self.gradient_clip_val!r}")
        for name in ("global_crop_scale", "local_crop_scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {getattr(self, name)!r}")
        if self.uses_custom_vit:
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
            if self.embed_dim % self.num_heads:
                raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
            for name, size in (("global_crop_size", self.resolved_global_crop_size), ("local_crop_size", self.resolved_local_crop_size)):
                if size % self.patch_size:
                    raise ValueError(f"{name} ({size}) must be a multiple of patch_size ({self.patch_size})")
        if self.decoder_dim % self.decoder_num_heads:
            raise ValueError(f"decoder_dim ({self.decoder_dim}) must be divisible by decoder_num_heads ({self.decoder_num_heads})")
        if self.method == "mocov3" and self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 for mocov3 (contrastive negatives, batch norm in the heads)")
        try:
            self.resolved_probe_image_size
        except ValueError as error:
            raise ValueError(f"probe_image_size: {error}") from None
        self._validate_devices()
        return self

    def _validate_devices(self) -> None:
        for name in ("accelerator", "strategy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string (a Lightning {name} name), got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        devices = self.devices
        if isinstance(devices, str):
            usable = devices == "auto" or all(part.strip().isdigit() for part in devices.split(","))
        elif isinstance(devices, list):
            usable = bool(devices) and all(_is_int(d) and d >= 0 for d in devices)
        else:
            usable = _is_int(devices) and (devices >= 1 or devices == -1)
        if not usable:
            raise ValueError(
                f"devices must be a positive count, -1 (all), 'auto' or a list of device indices, got {devices!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        # JSON has no tuples; lists round-trip through from_dict.
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PretrainConfig":
        """A config from field values, each typed from its declaration
        (:mod:`dse_tune.typed_config`); a bad one raises ConfigValueError naming it."""
        converted = dict(values)
        if isinstance(converted.get("splits"), str):
            converted["splits"] = [converted["splits"]]
        # "devices: '2'" (a string from a shell or an older file) is a count.
        if isinstance(converted.get("devices"), str) and converted["devices"].strip().isdigit():
            converted["devices"] = int(converted["devices"])
        return cls(**typed_fields(cls, converted))

    def replace(self, **changes: Any) -> "PretrainConfig":
        return PretrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_file(cls, path: str | Path) -> "PretrainConfig":
        """Read a YAML (``.yaml``/``.yml``) or JSON file of config fields; errors name
        the file and the field."""
        return cls.from_dict(read_config_file(path, cls))
