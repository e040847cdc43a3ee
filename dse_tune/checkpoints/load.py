"""Loading a checkpoint's backbone into a model, strictly both ways: exact, or an error.

Every key of the model's ``state_dict()`` must load, with its shape; and the other way, a
checkpoint key in the backbone's namespace (:func:`~dse_tune.checkpoints.fit.backbone_namespace`)
with no place in the model (extra blocks, a second norm) is a mismatch too, unless
``allow_extra`` names it. Build models without classifier heads (timm ``num_classes=0``;
:func:`~dse_tune.checkpoints.arch.build_architecture` drops torchvision's ``fc``): the
checkpoint's heads, projectors, predictors, decoders and queues are ignored and listed in
the report. :class:`CheckpointMismatchError` is raised *before* anything is copied: the
model is never left partly loaded, partly random.

``allow_missing`` / ``allow_extra`` patterns are shell-style (``fnmatch``: ``"head.*"``,
``"*.num_batches_tracked"``), or after ``re:`` a regular expression that must match the
whole key (``"re:blocks\\.\\d+\\.ls[12]\\..*"``).

Example:
    >>> import timm, torch
    >>> make = lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2,
    ...                                  embed_dim=32, num_heads=2, num_classes=0)
    >>> trained = make()
    >>> checkpoint = {"teacher": {f"backbone.{k}": v for k, v in trained.state_dict().items()},
    ...               "dino_loss": {"center": torch.zeros(1, 8)}, "epoch": 10}
    >>> model = make()
    >>> report = load_backbone(model, checkpoint)
    >>> report.format, report.branch, report.share, report.position.epoch
    ('dino', 'teacher', 1.0, 10)
    >>> torch.equal(model.pos_embed, trained.pos_embed)
    True
    >>> load_backbone(make(), {"teacher": {"backbone.pos_embed": trained.pos_embed}})
    Traceback (most recent call last):
    ...
    dse_tune.checkpoints.load.CheckpointMismatchError: checkpoint <checkpoint dict> does not fit the architecture ...: 1/30 ...
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

from torch import Tensor, nn

from dse_tune.checkpoints.branches import FormatMatch, choose_network, match_formats
from dse_tune.checkpoints.epochs import Position, stored_position
from dse_tune.checkpoints.fingerprints import FingerprintMismatchError, check_fingerprint
from dse_tune.checkpoints.fit import backbone_namespace, fit_hint, in_namespace
from dse_tune.checkpoints.formats import resolve_format
from dse_tune.checkpoints.read import read_checkpoint

#: Keys shown per list in error messages.
SHOWN_KEYS = 5


class CheckpointMismatchError(ValueError):
    """The checkpoint does not hold exactly the model's backbone weights with their shapes.

    Attributes: ``source`` (file or ``"<checkpoint dict>"``), ``format`` (``name:branch``
    tried, or ``"auto"`` when nothing matched), ``loaded`` / ``total`` counts,
    ``missing`` as ``[(key, model shape)]``, ``mismatched`` as
    ``[(key, checkpoint shape, model shape)]`` and ``extra``: backbone keys of the
    checkpoint with no place in the model (extra blocks, a second norm, ...).
    """

    def __init__(
        self, source: str, format: str, loaded: int, total: int, missing: list, mismatched: list, detail: str,
        extra: list | None = None,
    ) -> None:
        self.source, self.format, self.loaded, self.total = source, format, loaded, total
        self.missing, self.mismatched, self.extra = missing, mismatched, list(extra or [])
        self.share = loaded / total if total else 0.0
        super().__init__(
            f"checkpoint {source} does not fit the architecture (format {format}): {loaded}/{total} backbone weights "
            f"loadable ({self.share:.1%}); {detail}. The model was left unchanged"
        )


#: What a file that does not fit the architecture raises (a tracker records it as failed).
NOT_FITTING = (CheckpointMismatchError, FingerprintMismatchError)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_backbone` loaded.

    Attributes:
        source: the file (or the ``source`` name given for a dict).
        format, branch: the format that matched and its branch (``"dino"``, ``"teacher"``).
        container, prefix: where the weights were (``"teacher"``, ``"backbone."``;
            ``""`` container is the top level).
        loaded: the model keys loaded; ``total`` the model's key count.
        allowed_missing: model keys absent but excused by ``allow_missing``.
        ignored: checkpoint keys in the container that are not the model's (heads, ...).
        also_matched: other formats that read the same tensors (same layout, no telltale
            keys to tell them apart); ``auto`` reported the first.
        position: the epoch and step the checkpoint stores.
        notes: how the network was chosen when the file holds several (the documented
            default branch, and the others with the ``--format`` that reads them).
        warnings: known same-shape traps the file cannot rule out (one line each).

    To read a run's other checkpoints the same way, pass ``format=report.spec`` (e.g.
    ``"dino:teacher"``) and ``prefix=report.prefix``.
    """

    source: str
    format: str
    branch: str
    container: str
    prefix: str
    loaded: tuple[str, ...]
    total: int
    allowed_missing: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    also_matched: tuple[str, ...] = ()
    position: Position = Position(None, None)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        """Loaded weights / the model's weights (1.0 unless ``allow_missing`` excused some)."""
        return len(self.loaded) / self.total if self.total else 1.0

    @property
    def spec(self) -> str:
        return f"{self.format}:{self.branch}"

    def summary(self) -> str:
        """One line, e.g. ``"dino:teacher: 30/30 weights from 'teacher' (prefix 'backbone.'); ignored: head.* (6)"``."""
        where = f"'{self.container}'" if self.container else "the top level"
        text = f"{self.spec}: {len(self.loaded)}/{self.total} weights from {where} (prefix '{self.prefix}')"
        if self.allowed_missing:
            text += f", {len(self.allowed_missing)} allowed missing"
        if self.also_matched:
            text += f" (also fits: {', '.join(self.also_matched)})"
        for note in self.notes:
            text += f"; {note}"
        groups = ignored_groups(self.ignored)
        return text + (f"; ignored: {groups}" if groups else "; nothing ignored")


def ignored_groups(keys: Iterable[str]) -> str:
    """Keys grouped by their first name: ``"head.* (6), predictor.* (12)"``.

    >>> ignored_groups(["head.w", "head.b", "epoch_loss", "predictor.0.w"])
    'head.* (2), epoch_loss (1), predictor.* (1)'
    """
    parts = (key.partition(".") for key in keys)
    counts = Counter(f"{first}.*" if dot else first for first, dot, _ in parts)
    return ", ".join(f"{group} ({count})" for group, count in counts.items())


def model_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The model's state-dict keys and shapes: everything a checkpoint must provide."""
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def load_backbone(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    format: str = "auto",
    *,
    allow_missing: str | Iterable[str] = (),
    allow_extra: str | Iterable[str] = (),
    prefix: str | None = None,
    trust: bool = False,
    source: str | None = None,
) -> LoadReport:
    """Load the backbone weights of ``checkpoint`` into ``model``, all of them or none.

    Args:
        model: the architecture, built without a classifier head (see the module docstring).
        checkpoint: a file (read with :func:`~dse_tune.checkpoints.read.read_checkpoint`)
            or an already-read checkpoint dict.
        format: ``"auto"`` (try every format, keep the one loading the most weights), a
            name from :data:`~dse_tune.checkpoints.formats.FORMAT_NAMES` (its default
            branch, the network the DSE paper scores), or ``"name:branch"``
            (``"dino:student"``, ``"mocov3:base_encoder"``, ``"ijepa:target_encoder"``).
        allow_missing: model keys that may be absent (fnmatch, or ``re:`` + a regex).
        allow_extra: checkpoint keys of the backbone with no place in the model that may
            be left out (same patterns); without them such keys are a mismatch.
        prefix: the prefix of the backbone keys, overriding the format's (e.g. a
            LightningModule attribute: ``"model.backbone."``).
        trust: allow pickled objects (see :func:`~dse_tune.checkpoints.read.read_checkpoint`).
        source: the name used in messages for a checkpoint dict (default: the path).

    Raises:
        CheckpointMismatchError: a model weight missing, of another shape, or a backbone
            key with no place in the model; the model is left unchanged.
        FingerprintMismatchError: the checkpoint describes another network (``args.arch``, ...).
        AmbiguousCheckpointError: two networks with different weights fit and no
            documented default says which one is meant.
        CheckpointReadError: the file cannot be read.
        ValueError: an unknown format or branch, an invalid pattern.
    """
    path = None
    if isinstance(checkpoint, (str, Path)):
        path, source = Path(checkpoint), source or str(checkpoint)
        checkpoint = read_checkpoint(checkpoint, trust=trust)
    source = source or "<checkpoint dict>"
    allowed, allowed_extra = _compile_patterns(allow_missing), _compile_patterns(allow_extra, "allow_extra")
    shapes = model_shapes(model)
    matches = match_formats(shapes, checkpoint, format, prefix)
    if not matches or matches[0].loadable == 0:
        detail = _nothing_matched(checkpoint, shapes, format, matches) + fit_hint(_largest_tensor_dict(checkpoint)[1])
        raise CheckpointMismatchError(source, format, 0, len(shapes), sorted(shapes.items())[:SHOWN_KEYS], [], detail)
    best, notes = choose_network(matches, checkpoint, shapes, format, prefix)
    state = best.extraction.state
    missing = [(key, shape) for key, shape in shapes.items() if key not in state and not allowed(key)]
    mismatched = [
        (key, tuple(state[key].shape), shape)
        for key, shape in shapes.items()
        if key in state and tuple(state[key].shape) != shape
    ]
    namespace = backbone_namespace(shapes)
    extra = [key for key in state if key not in shapes and in_namespace(key, namespace) and not allowed_extra(key)]
    spec = f"{best.format.name}:{best.extraction.branch}"
    if missing or mismatched or extra:
        where = f"container '{best.extraction.container}', prefix '{best.extraction.prefix}'"
        detail = f"{where}; {_describe(missing, mismatched, extra)}{fit_hint(state, shapes)}"
        raise CheckpointMismatchError(source, spec, best.loadable, len(shapes), missing, mismatched, detail, extra)
    warnings = check_fingerprint(checkpoint, model, path=path, spec=spec, source=source)
    loaded = [key for key in shapes if key in state]
    result = model.load_state_dict({key: state[key] for key in loaded}, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # only the model's own keys were passed
    return LoadReport(
        source=source,
        format=best.format.name,
        branch=best.extraction.branch,
        container=best.extraction.container,
        prefix=best.extraction.prefix,
        loaded=tuple(loaded),
        total=len(shapes),
        allowed_missing=tuple(key for key in shapes if key not in state),
        ignored=tuple(best.extraction.ignored) + tuple(key for key in state if key not in shapes),
        also_matched=tuple(m.format.name for m in matches[1:] if _ties(m, best)),
        position=stored_position(checkpoint),
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


def _ties(match: FormatMatch, best: FormatMatch) -> bool:
    return (match.loadable, match.markers) == (best.loadable, best.markers)


def _compile_patterns(patterns: str | Iterable[str], what: str = "allow_missing") -> Callable[[str], bool]:
    """A predicate over model keys: true when any pattern matches (see the module docstring)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    tests: list[Callable[[str], bool]] = []
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                compiled = re.compile(pattern[3:])
            except re.error as error:
                message = f"{what} pattern {pattern!r} is not a valid regular expression: {error}"
                raise ValueError(message) from error
            tests.append(lambda key, compiled=compiled: compiled.fullmatch(key) is not None)
        else:
            tests.append(lambda key, pattern=pattern: fnmatchcase(key, pattern))
    return lambda key: any(test(key) for test in tests)


def _describe(missing: list, mismatched: list, extra: list) -> str:
    parts = []
    if mismatched:
        shown = ", ".join(f"{key}: checkpoint {ours}, model {theirs}" for key, ours, theirs in mismatched[:SHOWN_KEYS])
        parts.append(f"{len(mismatched)} of another shape: {shown}{' ...' if len(mismatched) > SHOWN_KEYS else ''}")
    if missing:
        shown = ", ".join(f"{key} {shape}" for key, shape in missing[:SHOWN_KEYS])
        parts.append(f"{len(missing)} missing: {shown}{' ...' if len(missing) > SHOWN_KEYS else ''}")
    if extra:
        shown = ignored_groups(extra)
        parts.append(f"{len(extra)} in the checkpoint's backbone with no place in the model: {shown} "
                     "(allow knowingly with allow_extra / --allow-extra)")
    return "; ".join(parts)


def _nothing_matched(
    checkpoint: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], format: str, matches: list[FormatMatch]
) -> str:
    """Why no weight matched: what the checkpoint holds next to what the model wants."""
    tried = "no format" if format == "auto" else f"format {format!r}"
    if not matches and format != "auto":
        fmt, layouts = resolve_format(format)
        containers = sorted({".".join(layout.container) or "(top level)" for layout in layouts})
        reason = f"{tried} reads {', '.join(containers)}, which the checkpoint lacks"
    else:
        reason = f"{tried} found any of the model's weights"
    top = ", ".join(list(map(str, checkpoint))[:8])
    state_name, state = _largest_tensor_dict(checkpoint)
    shown = _other_shapes(state, shapes)
    if shown:
        reason += f"; under {shown}"
    keys = ", ".join(list(state)[:SHOWN_KEYS])
    wanted = ", ".join(list(shapes)[:SHOWN_KEYS])
    return f"{reason}; top-level entries: {top}; tensors under {state_name}: {keys}; the model wants: {wanted}"


def _largest_tensor_dict(checkpoint: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The dict with the most tensors, at the top or one level down, and its name."""
    nested = [(repr(key), value) for key, value in checkpoint.items() if isinstance(value, Mapping)]
    candidates = [("the top level", checkpoint), *nested]
    return max(candidates, key=lambda item: sum(isinstance(v, Tensor) for v in item[1].values()))


def _other_shapes(state: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The model's keys found under some prefix with other shapes: ``"prefix 'x.': key: checkpoint (..), model (..)"``."""
    by_prefix: dict[str, list[str]] = {}
    for key, value in state.items():
        for model_key in shapes:
            if isinstance(value, Tensor) and (key == model_key or key.endswith("." + model_key)):
                by_prefix.setdefault(key[: len(key) - len(model_key)], []).append(model_key)
    if not by_prefix:
        return ""
    prefix, keys = max(by_prefix.items(), key=lambda item: len(item[1]))
    differ = [(k, tuple(state[prefix + k].shape), shapes[k]) for k in shapes if k in keys
              and tuple(state[prefix + k].shape) != shapes[k]]
    if not differ:
        return ""
    listed = ", ".join(f"{k}: checkpoint {theirs}, model {ours}" for k, theirs, ours in differ[:SHOWN_KEYS])
    return f"prefix '{prefix}' {len(differ)} of the model's keys have another shape: {listed}"
