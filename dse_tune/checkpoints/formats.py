"""Where each method's official checkpoint keeps its backbone weights.

A :class:`CheckpointFormat` lists :class:`Layout` s: a ``container`` (the key path from
the top of the checkpoint dict to a state dict) and a ``prefix`` that marks the
backbone's keys inside it. Leading ``module.`` (DistributedDataParallel) and
``_orig_mod.`` (``torch.compile``) are always stripped first, so one layout covers a
model saved with or without those wrappers. ``prefix=None`` means "find it" (the
Lightning format, where the prefix is the LightningModule's attribute name).

A layout's ``branch`` names which network it reads when a checkpoint holds several
(``teacher``/``student``, ``momentum_encoder``/``base_encoder``, ...). The first
layout's branch is the format's default: the network the DSE paper's code scores
(``EldercatSAM/SSL-Degradation`` ``models/__init__.py::get_models``: DINO's and iBOT's
teacher, MoCo v3's momentum encoder, I-JEPA's ``encoder``, ReSA's ``encoder``);
``"dino:student"`` keeps another branch.

``markers`` tell methods with the same layout apart (iBOT and DINO both keep
``teacher``/``backbone.``; iBOT also stores ``ibot_loss``): a top-level key, or
``"key:PATTERN"`` for a key inside the container (fnmatch, after ``module.`` stripping).

Sources, checked against the public repositories, are in ``docs/tracking.md``.

Example:
    >>> import torch
    >>> checkpoint = {"teacher": {"backbone.norm.weight": torch.ones(2), "head.w": torch.ones(1)},
    ...               "student": {"module.backbone.norm.weight": torch.zeros(2)}, "epoch": 10}
    >>> fmt, layouts = resolve_format("dino")
    >>> found = extract(checkpoint, layouts[0], {"norm.weight": (2,)})
    >>> found.branch, found.container, list(found.state), found.ignored
    ('teacher', 'teacher', ['norm.weight'], ['head.w'])
    >>> extract(checkpoint, resolve_format("dino:student")[1][0], {"norm.weight": (2,)}).state["norm.weight"]
    tensor([0., 0.])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from torch import Tensor

#: Wrapper prefixes stripped from every key before a layout's prefix is applied.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

#: Prefix words preferred when a found prefix ties: the network the paper scores is the
#: EMA teacher / momentum / target encoder.
PREFERRED_PREFIX_WORDS = ("teacher", "momentum", "target", "ema")


@dataclass(frozen=True)
class Layout:
    """One place a format keeps a backbone: ``checkpoint[container...]`` keys under ``prefix``."""

    branch: str
    container: tuple[str, ...]
    prefix: str | None


@dataclass(frozen=True)
class CheckpointFormat:
    """A method's checkpoint layout(s), with where that was read (see docs/tracking.md)."""

    name: str
    method: str
    layouts: tuple[Layout, ...]
    markers: tuple[str, ...] = ()
    file_names: str = ""
    source: str = ""
    verified: bool = True

    @property
    def branches(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layout.branch for layout in self.layouts))


@dataclass
class Extraction:
    """The backbone part of one checkpoint under one layout."""

    layout: Layout
    prefix: str
    state: dict[str, Tensor]
    ignored: list[str] = field(default_factory=list)

    @property
    def branch(self) -> str:
        return self.layout.branch

    @property
    def container(self) -> str:
        return ".".join(self.layout.container)


def _layouts(branch: str, container: tuple[str, ...], *prefixes: str | None) -> tuple[Layout, ...]:
    return tuple(Layout(branch, container, prefix) for prefix in prefixes)


_DINO_LIKE = (*_layouts("teacher", ("teacher",), "backbone."), *_layouts("student", ("student",), "backbone."))
_ESVIT_PREFIXES = ("", "backbone.backbone.")  # transformers: head on the backbone; ResNets: two wrappers

_FORMAT_LIST = (
    CheckpointFormat(
        name="dino",
        method="DINO",
        layouts=_DINO_LIKE,
        markers=("dino_loss",),
        file_names="checkpoint.pth, checkpoint{epoch:04}.pth",
        source="facebookresearch/dino main_dino.py (train_dino: save_dict)",
    ),
    CheckpointFormat(
        name="ibot",
        method="iBOT",
        layouts=_DINO_LIKE,
        markers=("ibot_loss",),
        file_names="checkpoint.pth, checkpoint{epoch:04}.pth",
        source="bytedance/ibot main_ibot.py (train_ibot: save_dict)",
    ),
    CheckpointFormat(
        name="mae",
        method="MAE",
        layouts=_layouts("encoder", ("model",), ""),
        markers=("key:decoder_embed.*", "key:mask_token"),
        file_names="checkpoint-{epoch}.pth",
        source="facebookresearch/mae util/misc.py (save_model), models_mae.py",
    ),
    CheckpointFormat(
        name="mocov3",
        method="MoCo v3",
        layouts=(
            *_layouts("momentum_encoder", ("state_dict",), "momentum_encoder."),
            *_layouts("base_encoder", ("state_dict",), "base_encoder."),
        ),
        markers=("key:momentum_encoder.*", "key:base_encoder.*"),
        file_names="checkpoint_{epoch:04d}.pth.tar",
        source="facebookresearch/moco-v3 main_moco.py (save_checkpoint), moco/builder.py",
    ),
    CheckpointFormat(
        name="ijepa",
        method="I-JEPA",
        layouts=(*_layouts("encoder", ("encoder",), ""), *_layouts("target_encoder", ("target_encoder",), "")),
        markers=("target_encoder", "predictor"),
        file_names="{tag}-ep{epoch}.pth.tar, {tag}-latest.pth.tar",
        source="facebookresearch/ijepa src/train.py (save_checkpoint)",
    ),
    CheckpointFormat(
        name="densecl",
        method="DenseCL",
        layouts=(
            *_layouts("backbone", ("state_dict",), "backbone.", ""),
            *_layouts("encoder_k", ("state_dict",), "encoder_k.0."),
        ),
        markers=("meta", "key:encoder_k.*", "key:queue2"),
        file_names="epoch_{epoch}.pth, latest.pth",
        source="WXinlong/DenseCL openselfsup/models/densecl.py, tools/extract_backbone_weights.py; "
        "open-mmlab/mmcv mmcv/runner/checkpoint.py (save_checkpoint)",
    ),
    CheckpointFormat(
        name="simsiam",
        method="SimSiam",
        layouts=_layouts("encoder", ("state_dict",), "encoder."),
        markers=("key:predictor.*",),
        file_names="checkpoint_{epoch:04d}.pth.tar",
        source="facebookresearch/simsiam main_simsiam.py (save_checkpoint), simsiam/builder.py",
    ),
    CheckpointFormat(
        name="resa",
        method="ReSA / MEC (encoder beside a momentum encoder)",
        layouts=(
            *_layouts("encoder", ("state_dict",), "encoder."),
            *_layouts("momentum_encoder", ("state_dict",), "momentum_encoder."),
        ),
        markers=("key:encoder.*", "key:momentum_encoder.*"),
        file_names="checkpoint_{epoch:04d}.pth.tar",
        source="EldercatSAM/SSL-Degradation models/__init__.py (get_models: 'mec', 'resa' read module.encoder.)",
    ),
    CheckpointFormat(
        name="swav",
        method="SwAV",
        layouts=_layouts("backbone", ("state_dict",), ""),
        markers=("key:prototypes*",),
        file_names="checkpoints/ckp-{epoch}.pth, checkpoint.pth.tar",
        source="facebookresearch/swav main_swav.py (save_dict), src/resnet50.py",
    ),
    CheckpointFormat(
        name="vicreg",
        method="VICReg",
        layouts=(*_layouts("backbone", ("model",), "backbone."), *_layouts("backbone", (), "")),
        markers=("key:projector.*",),
        file_names="model.pth (overwritten each epoch), resnet50.pth (final backbone)",
        source="facebookresearch/vicreg main_vicreg.py (main: state, resnet50.pth)",
    ),
    CheckpointFormat(
        name="barlowtwins",
        method="Barlow Twins",
        layouts=(*_layouts("backbone", ("model",), "backbone."), *_layouts("backbone", (), "")),
        markers=("key:projector.*", "key:bn.running_mean"),
        file_names="checkpoint.pth (overwritten each epoch), resnet50.pth (final backbone)",
        source="facebookresearch/barlowtwins main.py (main_worker: state, resnet50.pth)",
    ),
    CheckpointFormat(
        name="byol",
        method="BYOL (lucidrains/byol-pytorch)",
        layouts=(*_layouts("target", (), "target_encoder.net."), *_layouts("online", (), "online_encoder.net.", "")),
        markers=("key:online_encoder.*", "key:target_encoder.*"),
        file_names="checkpoints/checkpoint.{n}.pt",
        source="lucidrains/byol-pytorch byol_pytorch/trainer.py (BYOLTrainer), byol_pytorch/byol_pytorch.py (BYOL)",
    ),
    CheckpointFormat(
        name="esvit",
        method="EsViT",
        layouts=(
            *_layouts("teacher", ("teacher",), *_ESVIT_PREFIXES),
            *_layouts("student", ("student",), *_ESVIT_PREFIXES),
        ),
        markers=("key:head_dense.*", "key:backbone.backbone.*"),
        file_names="checkpoint.pth, checkpoint{epoch:04}.pth",
        source="microsoft/esvit main_esvit.py (save_dict), utils.py (MultiCropWrapper, ResNetWrapper)",
    ),
    CheckpointFormat(
        name="lightning",
        method="Lightning",
        layouts=_layouts("found", ("state_dict",), None),
        markers=("pytorch-lightning_version",),
        file_names="epoch={epoch}-step={step}.ckpt, last.ckpt",
        source="Lightning-AI/pytorch-lightning (checkpoint dict: state_dict, epoch, global_step)",
    ),
    CheckpointFormat(
        name="state_dict",
        method="plain state dict",
        layouts=(
            *_layouts("top", (), ""),
            *_layouts("state_dict", ("state_dict",), ""),
            *_layouts("model", ("model",), ""),
        ),
        file_names="any",
        source="torch.save(model.state_dict())",
    ),
)

FORMATS: dict[str, CheckpointFormat] = {fmt.name: fmt for fmt in _FORMAT_LIST}

#: Every accepted ``format`` value; ``auto`` tries the others in this order.
FORMAT_NAMES: tuple[str, ...] = ("auto", *FORMATS)


def resolve_format(spec: str) -> tuple[CheckpointFormat, tuple[Layout, ...]]:
    """The format and its layouts for ``"name"`` or ``"name:branch"`` (not ``"auto"``).

    >>> [layout.branch for layout in resolve_format("mocov3")[1]]
    ['momentum_encoder', 'base_encoder']
    >>> resolve_format("dino:ema")
    Traceback (most recent call last):
    ...
    ValueError: format 'dino' has no branch 'ema'; its branches: teacher, student
    """
    name, _, branch = spec.partition(":")
    fmt = FORMATS.get(name)
    if fmt is None:
        known = ", ".join(FORMAT_NAMES)
        raise ValueError(f"unknown checkpoint format {spec!r}; known: {known} (optionally name:branch)")
    if not branch:
        return fmt, fmt.layouts
    layouts = tuple(layout for layout in fmt.layouts if layout.branch == branch)
    if not layouts:
        raise ValueError(f"format {name!r} has no branch {branch!r}; its branches: {', '.join(fmt.branches)}")
    return fmt, layouts


def strip_wrappers(key: str) -> str:
    """``key`` without leading ``module.`` / ``_orig_mod.`` (DDP, torch.compile).

    >>> strip_wrappers("module._orig_mod.backbone.cls_token")
    'backbone.cls_token'
    """
    stripped = True
    while stripped:
        stripped = False
        for wrapper in WRAPPER_PREFIXES:
            if key.startswith(wrapper):
                key, stripped = key[len(wrapper) :], True
    return key


def container_state(checkpoint: Mapping[str, Any], container: tuple[str, ...]) -> dict[str, Any] | None:
    """The dict at ``container`` with wrapper prefixes stripped; None when absent."""
    node: Any = checkpoint
    for key in container:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, Mapping):
        return None
    return {strip_wrappers(str(key)): value for key, value in node.items()}


def extract(
    checkpoint: Mapping[str, Any],
    layout: Layout,
    model_shapes: Mapping[str, tuple[int, ...]],
    prefix: str | None = None,
) -> Extraction | None:
    """The tensors of ``checkpoint`` that ``layout`` names as backbone weights, keyed
    like the model; None when the container is absent.

    ``prefix`` overrides the layout's; ``model_shapes`` (model key -> shape) is used only
    to find a prefix when the layout has none.
    """
    state = container_state(checkpoint, layout.container)
    if state is None:
        return None
    if prefix is None:
        prefix = layout.prefix if layout.prefix is not None else find_prefix(state, model_shapes)
    backbone: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        if key.startswith(prefix) and isinstance(value, Tensor):
            backbone[key[len(prefix) :]] = value
        else:
            ignored.append(key)
    return Extraction(layout, prefix, backbone, ignored)


def find_prefix(state: Mapping[str, Any], model_shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The prefix under which ``state`` holds the most of the model's keys with the
    model's shapes (``""`` when none fits).

    Ties go to a prefix naming a teacher / momentum / target / EMA network, then to
    the shorter one (:func:`find_prefixes` lists every tied prefix).

    >>> import torch
    >>> state = {"student_backbone.w": torch.ones(2), "teacher_backbone.w": torch.ones(2)}
    >>> find_prefix(state, {"w": (2,)})
    'teacher_backbone.'
    """
    found = find_prefixes(state, model_shapes)
    return found[0] if found else ""


def find_prefixes(state: Mapping[str, Any], model_shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Every prefix holding the largest number of the model's keys with their shapes,
    best ranked first (see :func:`find_prefix`)."""
    counts: Counter[str] = Counter()
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue
        for cut in [0] + [i + 1 for i, char in enumerate(key) if char == "."]:
            suffix = key[cut:]
            if model_shapes.get(suffix) == tuple(value.shape):
                counts[key[:cut]] += 1
    if not counts:
        return []

    def rank(prefix: str) -> tuple[int, bool, int]:
        preferred = any(word in prefix.lower() for word in PREFERRED_PREFIX_WORDS)
        return counts[prefix], preferred, -len(prefix)

    top = max(counts.values())
    return sorted((prefix for prefix, count in counts.items() if count == top), key=rank, reverse=True)


def marker_score(fmt: CheckpointFormat, checkpoint: Mapping[str, Any], extraction: Extraction) -> float:
    """How many of ``fmt``'s markers the checkpoint shows; 0.5 for a format without markers
    (generic formats rank above a specific one whose markers are all absent)."""
    if not fmt.markers:
        return 0.5
    keys = container_state(checkpoint, extraction.layout.container) or {}
    found = 0
    for marker in fmt.markers:
        if marker.startswith("key:"):
            found += any(fnmatchcase(key, marker[4:]) for key in keys)
        else:
            found += marker in checkpoint
    return float(found)
