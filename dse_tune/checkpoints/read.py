"""Reading a checkpoint file into a dict, safely, with errors a tracker can act on.

``.pth .pt .pth.tar .ckpt .bin`` files go through ``torch.load(weights_only=True)``, which
builds tensors and plain containers and runs no other code. The few harmless objects
official scripts pickle next to the weights come back as inert stand-ins
(:data:`HARMLESS_GLOBALS`): DINO's, iBOT's, EsViT's and MAE's ``args`` namespace as a
:class:`types.SimpleNamespace`, a ``pathlib.PosixPath`` as a :class:`pathlib.PurePosixPath`.
Anything else pickled raises :class:`UntrustedCheckpointError` naming the objects;
``trust=True`` then retries with ``weights_only=False``, which runs whatever code the
pickle names: only for files you or your own training code wrote. ``.safetensors`` files
are read with the ``safetensors`` package when it is installed.

Example:
    >>> import torch, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint0010.pth")
    >>> torch.save({"epoch": 11, "teacher": {"backbone.w": torch.ones(2)}}, path)
    >>> sorted(read_checkpoint(path))
    ['epoch', 'teacher']
    >>> with open(path, "r+b") as f:
    ...     _ = f.truncate(100)  # a file still being written
    >>> read_checkpoint(path)
    Traceback (most recent call last):
    ...
    dse_tune.checkpoints.read.CheckpointReadError: cannot read checkpoint .../checkpoint0010.pth: damaged, ...
"""

from __future__ import annotations

import pathlib
import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: File name endings taken as checkpoints (lower case; ``.pth.tar`` before ``.tar``).
CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".ckpt", ".bin", ".safetensors")

#: Pickled globals that official checkpoints carry, by the dotted name the pickle stores,
#: mapped to stand-ins whose construction runs no code (see the module docstring).
HARMLESS_GLOBALS: dict[str, type] = {
    "argparse.Namespace": types.SimpleNamespace,
    "pathlib.PosixPath": pathlib.PurePosixPath,
}


_DAMAGED = "damaged, still being written, or not a torch checkpoint"


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be read (missing, truncated, not a checkpoint, ...).

    ``path`` is the file and ``cause`` the reason, also both in the message. A tracker
    skips such a file with a warning instead of stopping.
    """

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot read checkpoint {self.path}: {cause}")


class UntrustedCheckpointError(CheckpointReadError):
    """The file pickles objects beyond tensors and plain data; ``unsafe_globals`` names them.

    Every file of a run usually shares this, so a tracker should stop rather than skip.
    """

    def __init__(self, path: str | Path, unsafe_globals: list[str]) -> None:
        self.unsafe_globals = list(unsafe_globals)
        super().__init__(
            path,
            f"it pickles {', '.join(self.unsafe_globals)}, which a weights-only load refuses; "
            "loading it would run code named by the file. If you trust the file (your own "
            "training wrote it), pass trust=True",
        )


def is_checkpoint_file(path: str | Path) -> bool:
    """Whether the file name ends in one of :data:`CHECKPOINT_SUFFIXES`.

    >>> [is_checkpoint_file(n) for n in ("ckp-10.pth", "a.pth.tar", "epoch=1.ckpt", "log.txt")]
    [True, True, True, False]
    """
    return Path(path).name.lower().endswith(CHECKPOINT_SUFFIXES)


def read_checkpoint(
    path: str | Path, *, trust: bool = False, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, tensors on ``map_location`` (as for ``torch.load``).

    ``trust``: retry with ``weights_only=False`` (arbitrary code in the pickle runs) when the
    file pickles objects beyond :data:`HARMLESS_GLOBALS`. A whole pickled ``nn.Module``
    (``torch.save(model)``, needs ``trust``) comes back as its state dict.

    Raises:
        CheckpointReadError: missing, a folder, empty, truncated or not a checkpoint;
            needs ``safetensors`` that is not installed.
        UntrustedCheckpointError: pickled objects and ``trust=False``.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointReadError(path, "no such file")
    if not path.is_file():
        raise CheckpointReadError(path, "it is a folder, not a file")
    if path.stat().st_size == 0:
        raise CheckpointReadError(path, "the file is empty (still being written?)")
    if path.name.lower().endswith(".safetensors"):
        return _read_safetensors(path, map_location)
    content = _torch_load(path, trust=trust, map_location=map_location)
    if isinstance(content, nn.Module):
        content = content.state_dict()
    if not isinstance(content, Mapping):
        raise CheckpointReadError(path, f"it holds a {type(content).__name__}, not a dict of weights")
    return dict(content)


def _torch_load(path: Path, *, trust: bool, map_location: str | torch.device) -> Any:
    stand_ins = [(stand_in, name) for name, stand_in in HARMLESS_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path) or _globals_named_in(error)
        if not unsafe:  # the weights-only unpickler failed on a broken or foreign file
            raise CheckpointReadError(path, f"{_DAMAGED} ({_unpickler_reason(error)})") from error
        if not trust:
            raise UntrustedCheckpointError(path, unsafe) from error
    except Exception as error:  # torch raises RuntimeError, EOFError, OSError, ... for broken files
        raise CheckpointReadError(path, f"{_DAMAGED} ({type(error).__name__}: {_first_line(error)})") from error
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # the pickle names a module that is not importable here, ...
        raise CheckpointReadError(path, f"{type(error).__name__}: {_first_line(error)}") from error


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a weights-only load would refuse; empty when the file cannot be parsed."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint, truncated, ...: a read error, not a trust question
        return []
    return [name for name in names if name not in HARMLESS_GLOBALS]


def _globals_named_in(error: BaseException) -> list[str]:
    """The refused global torch names in its message (the only clue for legacy, non-zip files)."""
    names = re.findall(r"Unsupported global: GLOBAL (\S+) was not an allowed global", str(error))
    return [name for name in dict.fromkeys(names) if name not in HARMLESS_GLOBALS]


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        cause = "reading .safetensors files needs the safetensors package (pip install safetensors)"
        raise CheckpointReadError(path, cause) from error
    try:
        return dict(load_file(str(path), device=str(map_location)))
    except Exception as error:  # safetensors raises its own SafetensorError for broken files
        raise CheckpointReadError(path, f"{type(error).__name__}: {_first_line(error)}") from error


def _unpickler_reason(error: BaseException) -> str:
    """The unpickler's own complaint inside torch's long weights-only message."""
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(error))
    return match.group(1).strip() if match else "the unpickler failed"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
