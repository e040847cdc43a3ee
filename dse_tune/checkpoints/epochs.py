"""The epoch (or step) of a checkpoint, from its file name or its stored fields, and the
order of a run's checkpoints.

Names are read in this order (the number is the file's own convention, never shifted:
DINO's ``checkpoint0000.pth`` stores ``epoch: 1``): the ``regex`` when given (its named group
``epoch``, and ``step``, or its first group); Lightning's ``epoch=N`` and ``step=N``; a
keyword at the start of a word, then the number with an optional ``-``, ``_`` or ``.``
between (``checkpoint``, ``ckpt``, ``ckp``, ``epoch``, ``ep``, ``model`` give an epoch,
``iteration``, ``iter``, ``step`` a step; ``jepa`` holds no ``ep``); else a trailing
all-digit part of the name (``resnet50_100`` -> 100; ``resnet50`` has none). A name without
a number (``checkpoint.pth``, ``last.ckpt``) is a "latest" copy that training overwrites;
:func:`~dse_tune.checkpoints.files.order_checkpoints` reports it apart. The official names:
``docs/tracking.md``.

Example:
    >>> [parse_epoch(n) for n in ("checkpoint0100.pth", "checkpoint-99.pth", "ckp-100.pth",
    ...                           "resnet50_100.pth.tar", "ijepa-ep100.pth.tar", "last.ckpt")]
    [100, 99, 100, 100, 100, None]
    >>> parse_position("epoch=0010-step=000500.ckpt")
    Position(epoch=10, step=500)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from dse_tune.checkpoints.read import CHECKPOINT_SUFFIXES

_LIGHTNING_EPOCH = re.compile(r"(?<![A-Za-z])epoch=(\d+)")
_LIGHTNING_STEP = re.compile(r"(?<![A-Za-z])step=(\d+)")
_KEYWORD = re.compile(
    r"(?<![A-Za-z])(checkpoint|ckpt|ckp|epoch|ep|model|iteration|iter|step)[-_.]?(\d+)(?![A-Za-z])", re.IGNORECASE
)
_STEP_KEYWORDS = {"iteration", "iter", "step"}
_SEPARATORS = re.compile(r"[-_.=]")


class Position(NamedTuple):
    """Where a checkpoint sits in training: an epoch, a step, both or neither (None)."""

    epoch: int | None
    step: int | None

    @property
    def known(self) -> bool:
        return self.epoch is not None or self.step is not None


def file_stem(path: str | Path) -> str:
    """The file name without its checkpoint ending (``.pth.tar``, ``.ckpt``, ...).

    >>> file_stem("run/checkpoint_0099.pth.tar")
    'checkpoint_0099'
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in (*CHECKPOINT_SUFFIXES, ".tar"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def compile_epoch_regex(regex: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    """``regex`` compiled, with an error naming it when it is not a valid regular expression."""
    if regex is None or isinstance(regex, re.Pattern):
        return regex
    try:
        return re.compile(regex)
    except re.error as error:
        raise ValueError(f"epoch regex {regex!r} is not a valid regular expression: {error}") from error


def parse_position(path: str | Path, regex: str | re.Pattern[str] | None = None) -> Position:
    """The epoch and step named by the file name of ``path`` (see the module docstring).

    ``regex`` is searched in the file name with its ending; without groups, the whole match
    must be digits.

    >>> parse_position("iter_5000.pth")
    Position(epoch=None, step=5000)
    >>> parse_position("run7-e12.pt", regex=r"-e(\\d+)")
    Position(epoch=12, step=None)
    """
    pattern = compile_epoch_regex(regex)
    if pattern is not None:
        return _position_from_regex(Path(path).name, pattern)
    stem = file_stem(path)
    epoch_match, step_match = _LIGHTNING_EPOCH.search(stem), _LIGHTNING_STEP.search(stem)
    if epoch_match or step_match:
        return Position(*(int(match.group(1)) if match else None for match in (epoch_match, step_match)))
    epoch = step = None
    for match in _KEYWORD.finditer(stem):
        if match.group(1).lower() in _STEP_KEYWORDS:
            step = int(match.group(2))
        else:
            epoch = int(match.group(2))
    if epoch is not None or step is not None:
        return Position(epoch, step)
    parts = _SEPARATORS.split(stem)
    if parts and parts[-1].isdigit():
        return Position(int(parts[-1]), None)
    return Position(None, None)


def _position_from_regex(name: str, pattern: re.Pattern[str]) -> Position:
    match = pattern.search(name)
    if match is None:
        return Position(None, None)
    groups = match.groupdict()
    if "epoch" in groups or "step" in groups:
        return Position(_digits(groups.get("epoch"), pattern, name), _digits(groups.get("step"), pattern, name))
    text = match.group(1) if pattern.groups else match.group(0)
    return Position(_digits(text, pattern, name), None)


def _digits(text: str | None, pattern: re.Pattern[str], name: str) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise ValueError(
            f"epoch regex {pattern.pattern!r} matched {text!r} in {name!r}; its group must match digits only"
        )
    return int(text)


def parse_epoch(path: str | Path, regex: str | re.Pattern[str] | None = None) -> int | None:
    """The epoch named by the file name of ``path``, or None (see :func:`parse_position`)."""
    return parse_position(path, regex).epoch


def stored_position(checkpoint: Mapping[str, Any]) -> Position:
    """The epoch and step a checkpoint dict stores.

    Read from ``epoch`` and ``global_step`` / ``step`` / ``iteration`` at the top (DINO,
    iBOT, MAE, MoCo, SimSiam, SwAV, VICReg, Barlow Twins, I-JEPA, Lightning), else from
    mmcv's ``meta`` (``epoch``, ``iter``: DenseCL).

    >>> stored_position({"epoch": 3, "global_step": 120})
    Position(epoch=3, step=120)
    >>> stored_position({"meta": {"epoch": 10, "iter": 5000}, "state_dict": {}})
    Position(epoch=10, step=5000)
    """
    meta = checkpoint.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    steps = (*(checkpoint.get(key) for key in ("global_step", "step", "iteration")), meta.get("iter"))
    return Position(_first_int(checkpoint.get("epoch"), meta.get("epoch")), _first_int(*steps))


def epoch_from_checkpoint(checkpoint: Mapping[str, Any]) -> int | None:
    """The epoch a checkpoint dict stores, or None (see :func:`stored_position`)."""
    return stored_position(checkpoint).epoch


def _first_int(*values: Any) -> int | None:
    return next((number for number in map(_as_int, values) if number is not None), None)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if hasattr(value, "numel") and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())  # a 0-d integer tensor
    return None
