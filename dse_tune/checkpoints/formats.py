"""Where each method's official checkpoint keeps its backbone weights.

A :class:`CheckpointFormat` lists :class:`Layout` s: a ``container`` (the key path from the
top of the checkpoint dict to a state dict), a ``prefix`` that marks the backbone's keys in
it (``None``: find it, as for Lightning, where it is the LightningModule's attribute name),
and the ``branch`` it reads when a checkpoint holds several networks. Leading ``module.``
(DDP) and ``_orig_mod.`` (``torch.compile``) are always stripped first. The first layout's
branch is the format's default: the network the DSE paper's code scores
(``EldercatSAM/SSL-Degradation`` ``models/__init__.py::get_models``: DINO's and iBOT's
teacher, MoCo v3's momentum encoder, I-JEPA's and ReSA's ``encoder``); ``"dino:student"``
keeps another branch. ``markers`` tell methods with the same layout apart (iBOT, unlike
DINO, stores ``ibot_loss``): a top-level key, or ``"key:PATTERN"`` for a key inside the
container (fnmatch, after ``module.`` stripping). Sources, checked against the public
repositories: ``docs/tracking.md``.

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


def _own_containers(prefixes: tuple[str, ...], *branches: str) -> tuple[Layout, ...]:
    """Each branch in its own top-level dict of that name (DINO's ``teacher``/``student``)."""
    return tuple(layout for branch in branches for layout in _layouts(branch, (branch,), *prefixes))


def _in_state_dict(*branches: str) -> tuple[Layout, ...]:
    """Each branch under ``state_dict`` with its own name as prefix (MoCo v3's ``momentum_encoder.``)."""
    return tuple(layout for branch in branches for layout in _layouts(branch, ("state_dict",), f"{branch}."))


_BACKBONE_IN_MODEL_OR_TOP = (*_layouts("backbone", ("model",), "backbone."), *_layouts("backbone", (), ""))
_DINO_NAMES = "checkpoint.pth, checkpoint{epoch:04}.pth"
_MOCO_NAMES = "checkpoint_{epoch:04d}.pth.tar"

# One row per format: CheckpointFormat(name, method, layouts, markers, file_names, source).
_FORMAT_LIST = (
    CheckpointFormat(
        "dino", "DINO", _own_containers(("backbone.",), "teacher", "student"), ("dino_loss",),
        _DINO_NAMES, "facebookresearch/dino main_dino.py (train_dino: save_dict)"),
    CheckpointFormat(
        "ibot", "iBOT", _own_containers(("backbone.",), "teacher", "student"), ("ibot_loss",),
        _DINO_NAMES, "bytedance/ibot main_ibot.py (train_ibot: save_dict)"),
    CheckpointFormat(
        "mae", "MAE", _layouts("encoder", ("model",), ""), ("key:decoder_embed.*", "key:mask_token"),
        "checkpoint-{epoch}.pth", "facebookresearch/mae util/misc.py (save_model), models_mae.py"),
    CheckpointFormat(
        "mocov3", "MoCo v3", _in_state_dict("momentum_encoder", "base_encoder"),
        ("key:momentum_encoder.*", "key:base_encoder.*"), _MOCO_NAMES,
        "facebookresearch/moco-v3 main_moco.py (save_checkpoint), moco/builder.py"),
    CheckpointFormat(
        "ijepa", "I-JEPA", _own_containers(("",), "encoder", "target_encoder"),
        ("target_encoder", "predictor"), "{tag}-ep{epoch}.pth.tar, {tag}-latest.pth.tar",
        "facebookresearch/ijepa src/train.py (save_checkpoint)"),
    CheckpointFormat(
        "densecl", "DenseCL",
        (*_layouts("backbone", ("state_dict",), "backbone.", ""),
         *_layouts("encoder_k", ("state_dict",), "encoder_k.0.")),
        ("meta", "key:encoder_k.*", "key:queue2"), "epoch_{epoch}.pth, latest.pth",
        "WXinlong/DenseCL openselfsup/models/densecl.py, tools/extract_backbone_weights.py; "
        "open-mmlab/mmcv mmcv/runner/checkpoint.py (save_checkpoint)"),
    CheckpointFormat(
        "simsiam", "SimSiam", _in_state_dict("encoder"), ("key:predictor.*",), _MOCO_NAMES,
        "facebookresearch/simsiam main_simsiam.py (save_checkpoint), simsiam/builder.py"),
    CheckpointFormat(
        "resa", "ReSA / MEC (encoder beside a momentum encoder)",
        _in_state_dict("encoder", "momentum_encoder"), ("key:encoder.*", "key:momentum_encoder.*"),
        _MOCO_NAMES,
        "EldercatSAM/SSL-Degradation models/__init__.py (get_models: 'mec', 'resa' read module.encoder.)"),
    CheckpointFormat(
        "swav", "SwAV", _layouts("backbone", ("state_dict",), ""), ("key:prototypes*",),
        "checkpoints/ckp-{epoch}.pth, checkpoint.pth.tar",
        "facebookresearch/swav main_swav.py (save_dict), src/resnet50.py"),
    CheckpointFormat(
        "vicreg", "VICReg", _BACKBONE_IN_MODEL_OR_TOP, ("key:projector.*",),
        "model.pth (overwritten each epoch), resnet50.pth (final backbone)",
        "facebookresearch/vicreg main_vicreg.py (main: state, resnet50.pth)"),
    CheckpointFormat(
        "barlowtwins", "Barlow Twins", _BACKBONE_IN_MODEL_OR_TOP, ("key:projector.*", "key:bn.running_mean"),
        "checkpoint.pth (overwritten each epoch), resnet50.pth (final backbone)",
        "facebookresearch/barlowtwins main.py (main_worker: state, resnet50.pth)"),
    CheckpointFormat(
        "byol", "BYOL (lucidrains/byol-pytorch)",
        (*_layouts("target", (), "target_encoder.net."), *_layouts("online", (), "online_encoder.net.", "")),
        ("key:online_encoder.*", "key:target_encoder.*"), "checkpoints/checkpoint.{n}.pt",
        "lucidrains/byol-pytorch byol_pytorch/trainer.py (BYOLTrainer), byol_pytorch/byol_pytorch.py (BYOL)"),
    CheckpointFormat(
        # transformers keep the head on the backbone (prefix ""); ResNets have two wrappers
        "esvit", "EsViT", _own_containers(("", "backbone.backbone."), "teacher", "student"),
        ("key:head_dense.*", "key:backbone.backbone.*"), _DINO_NAMES,
        "microsoft/esvit main_esvit.py (save_dict), utils.py (MultiCropWrapper, ResNetWrapper)"),
    CheckpointFormat(
        "lightning", "Lightning", _layouts("found", ("state_dict",), None), ("pytorch-lightning_version",),
        "epoch={epoch}-step={step}.ckpt, last.ckpt",
        "Lightning-AI/pytorch-lightning (checkpoint dict: state_dict, epoch, global_step)"),
    CheckpointFormat(
        "state_dict", "plain state dict",
        (*_layouts("top", (), ""), *_layouts("state_dict", ("state_dict",), ""),
         *_layouts("model", ("model",), "")),
        (), "any", "torch.save(model.state_dict())"),
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
    while key.startswith(WRAPPER_PREFIXES):  # each wrapper is one dotted name
        key = key.partition(".")[2]
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
