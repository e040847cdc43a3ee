"""What a tracked run records in ``config.json``, and how to read its checkpoints again.

A run written by ``dse-tune track`` (:mod:`dse_tune.checkpoint_tracking`) stores its probe set with
the keys of a ``dse-tune pretrain`` run (:class:`ProbeSettings`) and, under ``"tracked"``, how
its checkpoint files are read (:class:`ReadSettings`, plus the format and prefix the first
file matched), so that evaluation (:func:`checkpoint_loader`) rebuilds the same network and
the same probe images.

Example:
    >>> probe = ProbeSettings.from_config({"data": "synthetic", "probe_size": 16, "image_size": 32})
    >>> probe.probe_size, probe.image_size, probe.build(32).images.shape
    (16, 32, torch.Size([16, 3, 32, 32]))
    >>> ReadSettings.from_config({"arch": "resnet18", "layer": "all"}).history_layer
    -1
    >>> import tempfile; model_loader_for_run(tempfile.mkdtemp()) is None  # not a tracked run
    True
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from torch import nn

from dse_tune.runs import read_config

__all__ = ["TRACKED_KEY", "CheckpointResult", "LayerTokens", "ProbeSettings", "ReadSettings", "checkpoint_bar",
           "checkpoint_loader", "model_loader_for_run", "score_checkpoints"]

#: The config.json key holding how a tracked run's checkpoints are read.
TRACKED_KEY = "tracked"

@dataclass(frozen=True)
class ProbeSettings:
    """The probe set, with the config keys of a ``dse-tune pretrain`` run.

    ``image_size=None``: the architecture's (``img_size`` of the arch kwargs, else its
    default input size). ``seed`` selects the synthetic scenes, ``probe_seed`` seeds
    the DSE k-means.
    """

    data: str = "synthetic"
    splits: tuple[str, ...] | None = None
    probe_size: int = 64
    image_size: int | tuple[int, int] | str | None = None  # N, (H, W) or "native"
    probe_seed: int = 0
    synthetic_size: int = 512
    seed: int = 0

    def to_config(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        config["splits"] = None if self.splits is None else list(self.splits)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> ProbeSettings:
        """The settings a run recorded (absent keys keep the defaults); ``overrides`` that
        are not None win."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: config[key] for key in names if config.get(key) is not None}
        if config.get("probe_image_size") is not None:  # a pretraining run: its probe size, not its input size
            values["image_size"] = config["probe_image_size"]
        values.update({key: value for key, value in overrides.items() if value is not None})
        if values.get("splits") is not None:
            values["splits"] = tuple(values["splits"])
        if isinstance(values.get("image_size"), list):  # [H, W] in JSON
            values["image_size"] = tuple(values["image_size"])
        values["data"] = str(values.get("data", "synthetic"))
        return cls(**values)

    def build(self, image_size: Any) -> Any:
        """The :class:`~dse_tune.data.ProbeSet` (:func:`dse_tune.data.probe_set_for`, as
        ``dse-tune pretrain`` builds it). Every image is read here: a broken one fails
        before any scoring."""
        from dse_tune.data import probe_set_for

        return probe_set_for(self, image_size=self.image_size or image_size)


@dataclass(frozen=True)
class ReadSettings:
    """How a run's checkpoints are read: see :func:`dse_tune.checkpoints.load_backbone`.

    ``layer``: -1 (last block with the final norm), a block index, or ``"all"`` (the
    history holds -1; every block is scored into :data:`LAYERS_FILE`). ``layer_norm``:
    a block's tokens with the final norm, as the paper's per-layer code takes them
    (default), or raw (False; what runs tracked before this option recorded).
    """

    arch: str
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    format: str = "auto"
    prefix: str | None = None
    allow_missing: tuple[str, ...] = ()
    layer: int | str = -1
    trust: bool = False
    allow_extra: tuple[str, ...] = ()
    layer_norm: bool = True

    def to_config(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "arch_kwargs": dict(self.arch_kwargs),
                "allow_missing": list(self.allow_missing), "allow_extra": list(self.allow_extra)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ReadSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in config.items() if key in names}
        values["allow_missing"] = tuple(values.get("allow_missing") or ())
        values["allow_extra"] = tuple(values.get("allow_extra") or ())
        values.setdefault("layer_norm", False)  # recorded before the option: raw block outputs
        return cls(**values)

    @property
    def history_layer(self) -> int:
        return -1 if self.layer == "all" else int(self.layer)


def model_loader_for_run(run_dir: str | Path) -> Callable[..., Any] | None:
    """For a tracked run: ``load(path, map_location="cpu") -> model`` rebuilding the
    architecture and loading a checkpoint the way ``dse-tune track`` read it (its
    ``dense_tokens`` are the tracked layer's); None for other runs."""
    config = read_config(run_dir)
    tracked = config.get(TRACKED_KEY)
    if not isinstance(tracked, Mapping):
        return None
    read = ReadSettings.from_config(tracked)
    spec = tracked.get("format_found") or read.format

    def load(path: str | Path, map_location: Any = "cpu") -> Any:
        from dse_tune.checkpoints import build_architecture, load_backbone

        model = build_architecture(read.arch, read.arch_kwargs)
        load_backbone(model, path, spec, allow_missing=read.allow_missing, allow_extra=read.allow_extra,
                      prefix=read.prefix, trust=read.trust)
        model = model.to(map_location).eval()
        return model if read.history_layer == -1 else LayerTokens(model, read.history_layer, read.layer_norm)

    return load


def checkpoint_loader(run_dir: str | Path | None, *, trust: bool = False) -> Callable[..., Any]:
    """THE way evaluation loads a run's checkpoints: ``load(path, map_location="cpu")``.

    A run written by ``dse-tune track`` is read the way the tracker read it
    (:func:`model_loader_for_run`); any other run is a dse_tune pretraining run, whose scored
    network is rebuilt from the config the checkpoint records
    (:func:`~dse_tune.checkpoints.pretrain_run.load_pretrain_backbone`, weights-only unless ``trust``).
    """
    tracked = None if run_dir is None else model_loader_for_run(run_dir)
    if tracked is not None:
        return tracked

    def load(path: str | Path, map_location: Any = "cpu") -> Any:
        from dse_tune.checkpoints.pretrain_run import load_pretrain_backbone

        return load_pretrain_backbone(path, map_location, trust=trust)[0]

    return load


def checkpoint_bar(items: Any, desc: str, progress: bool = True) -> Any:
    """The progress bar of every per-checkpoint loop (hidden when not ``progress``)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="ckpt", disable=not progress)


class CheckpointResult(NamedTuple):
    """One job of :func:`score_checkpoints`: ``value`` is None when ``problem`` says why."""
    run: Any
    evaluation: Any
    checkpoint: Path | None
    value: Any
    problem: str | None
    seconds: float


def score_checkpoints(jobs: Iterable[tuple[Any, Any, Path | None]], score: Callable[[Any, Any], Any], *, desc: str,
                      progress: bool = True, device: Any = "cpu", load: Callable[..., Any] | None = None
                      ) -> Iterator[CheckpointResult]:
    """THE per-checkpoint loop of evaluation: for each ``(run, evaluation, checkpoint)``,
    with a progress bar, ``score(model, run)`` of the checkpoint loaded in eval mode on
    ``device`` (by ``load(path, map_location=...)``, default :func:`checkpoint_loader` of
    the run's folder). A checkpoint that is absent, missing on disk, or fails to load or
    score gives ``value=None`` and the reason; the others go on.
    """
    for run, evaluation, checkpoint in checkpoint_bar(list(jobs), desc, progress):
        started, value, problem = time.perf_counter(), None, None
        if checkpoint is None:
            problem = "the evaluation has no checkpoint"
        elif not Path(checkpoint).is_file():
            problem = f"checkpoint {checkpoint} does not exist"
        else:
            try:
                model = (load or checkpoint_loader(run.path))(checkpoint, map_location=device)
                if isinstance(model, nn.Module):
                    model = model.to(device).eval()
                value = score(model, run)
            except Exception as error:  # noqa: BLE001 - one bad checkpoint must not stop the others
                problem = f"cannot score {checkpoint}: {type(error).__name__}: {error}"
        yield CheckpointResult(run, evaluation, checkpoint, value, problem, time.perf_counter() - started)


class LayerTokens(nn.Module):
    """A model whose ``dense_tokens`` are one block's (see :func:`~dse_tune.checkpoints.dense_tokens_at`)."""

    def __init__(self, model: nn.Module, layer: int, norm: bool = True) -> None:
        super().__init__()
        self.model, self.layer, self.norm = model, layer, norm

    def dense_tokens(self, images: Any) -> Any:
        from dse_tune.checkpoints import dense_tokens_at

        return dense_tokens_at(self.model, images, self.layer, norm=self.norm)
