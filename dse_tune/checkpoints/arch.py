"""Building the architecture a checkpoint's weights go into, from a name.

``arch`` is a preset of an official model (``"mocov3_vits16"``: the timm model with the
kwargs that make it that network, :data:`~dse_tune.checkpoints.presets.PRESETS`); a timm name
(``"timm:NAME"`` forces timm), created with ``pretrained=False`` (the weights come from the
checkpoint) and ``num_classes=0`` (no classifier head); a torchvision ResNet-family name
(timm is tried first for names both have; ``"torchvision:resnet50"`` insists), wrapped in
:class:`TorchvisionResNet`; or ``"module:function"`` / ``"path/to/file.py:function"``, a
user's builder returning an ``nn.Module`` (without a classifier head, or allow its keys to
be missing when loading). ``arch_kwargs`` go to the constructor (``{"img_size": 64,
"patch_size": 8, ...}``; for a preset they add to its own). timm's ResNets use torchvision's
weight names, so the official ResNet checkpoints (SwAV, Barlow Twins, VICReg, DenseCL,
SimSiam, MoCo v3) load into either.

Example:
    >>> vit = build_architecture("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2})
    >>> type(vit).__name__, len(vit.blocks)
    ('VisionTransformer', 2)
    >>> build_architecture("vit_tiny_patch16_22")
    Traceback (most recent call last):
    ...
    dse_tune.checkpoints.arch.ArchitectureError: unknown architecture 'vit_tiny_patch16_22': ...vit_tiny_patch16_224...
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dse_tune.checkpoints.presets import PRESETS, resolve_preset

_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


class ArchitectureError(ValueError):
    """The architecture cannot be built: unknown name, bad kwargs, a builder that fails."""


def build_architecture(arch: str, arch_kwargs: Mapping[str, Any] | str | None = None) -> nn.Module:
    """The model named by ``arch`` (see the module docstring), in eval mode; ``arch_kwargs``
    as a dict or a JSON object string.

    Raises:
        ArchitectureError: unknown names (with close matches), kwargs the constructor
            refuses, a module or function that cannot be found, a builder that does not
            return an ``nn.Module``.
    """
    import timm

    kwargs = _parse_kwargs(arch_kwargs)
    if kwargs.get("pretrained"):
        raise ArchitectureError(
            "arch_kwargs asks for pretrained=True; the weights come from the checkpoint, so leave it out"
        )
    kwargs.pop("pretrained", None)
    library, _, name = arch.partition(":")
    preset = resolve_preset(arch, kwargs)
    if preset is not None:
        model = _build_timm(*preset)
    elif name and library == "timm":
        model = _build_timm(name, kwargs)
    elif name and library == "torchvision":
        model = _build_torchvision(name, kwargs)
    elif name:
        model = _build_from_function(library, name, kwargs)
    elif timm.is_model(arch):
        model = _build_timm(arch, kwargs)
    elif arch in _torchvision_names():
        model = _build_torchvision(arch, kwargs)
    else:
        raise ArchitectureError(
            f"unknown architecture {arch!r}: not a timm or torchvision model name, nor module:function; "
            f"{_close_matches(arch)}"
        )
    return model.eval()


def _parse_kwargs(arch_kwargs: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if arch_kwargs is None:
        return {}
    if isinstance(arch_kwargs, str):
        try:
            arch_kwargs = json.loads(arch_kwargs) if arch_kwargs.strip() else {}
        except json.JSONDecodeError as error:
            raise ArchitectureError(f"arch kwargs {arch_kwargs!r} are not valid JSON: {error}") from error
    if not isinstance(arch_kwargs, Mapping):
        raise ArchitectureError(f"arch kwargs must be a JSON object (a dict), got {type(arch_kwargs).__name__}")
    return dict(arch_kwargs)


def _torchvision_names() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models())


def _close_matches(name: str) -> str:
    import timm

    pool = sorted(set(timm.list_models()) | set(_torchvision_names()) | set(PRESETS))
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.6)
    containing = timm.list_models(f"*{name}*")[:5] if name else []
    found = list(dict.fromkeys(close + containing))[:8]
    if not found:
        return "no close matches (list names with timm.list_models('*vit*'))"
    return f"close matches: {', '.join(found)}"


def _build_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise ArchitectureError(f"unknown timm model {name!r}; {_close_matches(name)}")
    try:
        return timm.create_model(name, pretrained=False, **{"num_classes": 0, **kwargs})
    except TypeError as error:  # a keyword the model class does not take
        raise ArchitectureError(f"timm model {name!r} does not accept arch kwargs {sorted(kwargs)}: {error}") from error
    except (ValueError, AssertionError, RuntimeError) as error:  # e.g. embed_dim not divisible by num_heads
        raise ArchitectureError(f"timm model {name!r} cannot be built with arch kwargs {kwargs}: {error}") from error


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    if name not in _torchvision_names():
        raise ArchitectureError(f"unknown torchvision model {name!r}; {_close_matches(name)}")
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as error:
        message = f"torchvision model {name!r} cannot be built with arch kwargs {kwargs}: {error}"
        raise ArchitectureError(message) from error
    if not isinstance(model, torchvision.models.ResNet):
        raise ArchitectureError(
            f"torchvision model {name!r} is a {type(model).__name__}; only ResNet-family torchvision models are "
            "supported (their dense tokens are layer4's); use a timm name or module:function for others"
        )
    return TorchvisionResNet(model)


def _build_from_function(module_name: str, function_name: str, kwargs: dict[str, Any]) -> nn.Module:
    module = _import_builder_module(module_name)
    builder = getattr(module, function_name, None)
    if not callable(builder):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(function_name, names, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ArchitectureError(f"module {module_name!r} has no function {function_name!r}{hint}")
    try:
        model = builder(**kwargs)
    except Exception as error:  # the user's code: any failure is reported with its origin
        message = f"{module_name}:{function_name}(**{kwargs}) failed: {type(error).__name__}: {error}"
        raise ArchitectureError(message) from error
    if not isinstance(model, nn.Module):
        returned = type(model).__name__
        raise ArchitectureError(f"{module_name}:{function_name} returned a {returned}, not a torch.nn.Module")
    return model


def _import_builder_module(module_name: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ArchitectureError(f"builder file {module_name!r} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file: report what failed while importing it
            message = f"importing builder file {module_name!r} failed: {type(error).__name__}: {error}"
            raise ArchitectureError(message) from error
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ArchitectureError(f"cannot import module {module_name!r} (from {module_name}:...): {error}") from error


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet without ``fc``, with the same weight names, and dense tokens.

    ``forward`` gives the pooled (B, C) embedding; ``dense_tokens(images)`` the last
    stage (``layer4``) as (B, H*W, C), like :func:`dse_tune.features.dense_tokens` does
    for timm ConvNets. Stages for layer selection follow timm's ResNet
    (``feature_info``): 0 the stem (after the first ReLU), 1-4 ``layer1``-``layer4``.

    >>> import torchvision
    >>> model = TorchvisionResNet(torchvision.models.resnet18())
    >>> model.dense_tokens(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 4, 512])
    >>> "fc.weight" in model.state_dict(), "layer4.1.bn2.weight" in model.state_dict()
    (False, True)
    """

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", *_RESNET_STAGES, "avgpool"):
            setattr(self, name, getattr(resnet, name))
        channels = [self.conv1.out_channels] + [_stage_channels(getattr(self, name)) for name in _RESNET_STAGES]
        reductions = (2, 4, 8, 16, 32)
        modules = ("relu", *_RESNET_STAGES)
        self.feature_info = [
            {"num_chs": c, "reduction": r, "module": m} for c, r, m in zip(channels, reductions, modules)
        ]
        self.num_features = channels[-1]

    def forward_intermediates(
        self, images: Tensor, indices: int | list[int] | None = None, intermediates_only: bool = True, **_: Any
    ) -> list[Tensor]:
        """The (B, C, H, W) outputs of the stages ``indices``, in stage order (timm's
        numbering, see the class; negative indices count from the end)."""
        count = len(self.feature_info)
        if indices is None:
            indices = list(range(count))
        wanted = [i % count for i in ([indices] if isinstance(indices, int) else indices)]
        outputs = []
        x = self.relu(self.bn1(self.conv1(images)))
        if 0 in wanted:
            outputs.append(x)
        x = self.maxpool(x)
        for stage, name in enumerate(_RESNET_STAGES, start=1):
            if stage > max(wanted):
                break
            x = getattr(self, name)(x)
            if stage in wanted:
                outputs.append(x)
        return outputs

    def forward_features(self, images: Tensor) -> Tensor:
        """The last stage (``layer4``) as (B, C, H, W)."""
        return self.forward_intermediates(images, indices=4)[0]

    def dense_tokens(self, images: Tensor) -> Tensor:
        return self.forward_features(images).flatten(2).transpose(1, 2)

    def forward(self, images: Tensor) -> Tensor:
        return torch.flatten(self.avgpool(self.forward_features(images)), 1)


def _stage_channels(stage: nn.Sequential) -> int:
    last_block = stage[-1]  # Bottleneck ends in bn3, BasicBlock in bn2
    last_norm = last_block.bn3 if hasattr(last_block, "bn3") else last_block.bn2
    return int(last_norm.num_features)
