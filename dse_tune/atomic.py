"""Atomic file writes (standard library only): readers never see half a file.

The temporary file lives in the target's folder, because ``os.replace`` is atomic only
within one file system, and it is removed if writing fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then move the result onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        # mkstemp makes the file private (0600); a result file gets the usual mode.
        os.chmod(temporary, 0o666 & ~_umask())
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps_options: Any) -> Path:
    """Write ``data`` as indented JSON with a final newline to ``path`` atomically;
    ``dumps_options`` go to :func:`json.dumps` (say ``allow_nan=False``, ``default=str``)."""
    return atomic_write_text(path, json.dumps(data, indent=2, **dumps_options) + "\n")
