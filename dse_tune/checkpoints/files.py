"""Finding a run's checkpoint files and putting them in training order.

Example:
    >>> import os, tempfile
    >>> run = tempfile.mkdtemp()
    >>> for name in ("checkpoint0100.pth", "checkpoint0020.pth", "checkpoint.pth", "log.txt"):
    ...     with open(os.path.join(run, name), "w") as f:
    ...         _ = f.write(name)
    >>> order = order_checkpoints(collect_checkpoints(run))
    >>> [(item.epoch, item.path.name) for item in order]
    [(20, 'checkpoint0020.pth'), (100, 'checkpoint0100.pth')]
    >>> [path.name for path in order.unnumbered]
    ['checkpoint.pth']
"""

from __future__ import annotations

import filecmp
import functools
import glob
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dse_tune.checkpoints.epochs import Position, compile_epoch_regex, parse_position, stored_position
from dse_tune.checkpoints.read import CHECKPOINT_SUFFIXES, CheckpointReadError, is_checkpoint_file


class CheckpointSpecError(ValueError):
    """A folder, glob or list file that does not lead to checkpoint files."""


class NoCheckpointsError(CheckpointSpecError):
    """A folder or glob with no checkpoint files in it."""


class DuplicateEpochError(ValueError):
    """Several different files claim the same epoch (or step); ``groups`` maps each
    position to its files."""

    def __init__(self, groups: Mapping[tuple[int, ...], list[Path]], what: str) -> None:
        self.groups = dict(groups)
        first = list(self.groups.items())[:3]
        shown = "; ".join(f"{what} {key[0]}: {', '.join(str(p) for p in paths)}" for key, paths in first)
        more = f" (and {len(self.groups) - 3} more)" if len(self.groups) > 3 else ""
        super().__init__(
            f"ambiguous checkpoint order, several files for the same {what}: {shown}{more}. "
            "Remove the extra files, list the ones to use in a text file, or give an epoch regex"
        )


class CheckpointFile(NamedTuple):
    """One ordered checkpoint: ``epoch`` (None for step-named runs), ``path``, ``step``
    (None when unknown) and where the number came from (``"name"``, ``"regex"`` or
    ``"stored"``)."""

    epoch: int | None
    path: Path
    step: int | None = None
    source: str = "name"


@dataclass
class CheckpointOrder:
    """What :func:`order_checkpoints` found. Iterating gives ``ordered``.

    Attributes:
        ordered: the checkpoints in training order.
        unnumbered: files whose position is unknown (no number in the name, and no
            stored epoch read); a tracker skips them by default.
        copies: ``(path, reason)`` for unnumbered files that duplicate an ordered one
            (a symlink, the same bytes, or the same stored epoch).
        unreadable: ``(path, reason)`` for unnumbered files whose fields could not be read.
        by: ``"epoch"`` or ``"step"``: the number the order follows.
    """

    ordered: list[CheckpointFile] = field(default_factory=list)
    unnumbered: list[Path] = field(default_factory=list)
    copies: list[tuple[Path, str]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    by: str = "epoch"

    def __iter__(self) -> Iterator[CheckpointFile]:
        return iter(self.ordered)

    def __len__(self) -> int:
        return len(self.ordered)


def collect_checkpoints(spec: str | Path, *, recursive: bool = False) -> list[Path]:
    """The checkpoint files named by ``spec``, sorted by path.

    ``spec`` is a folder (its files ending in :data:`~dse_tune.checkpoints.read.CHECKPOINT_SUFFIXES`;
    subfolders too with ``recursive=True``), a glob (``"run/ckp-*.pth"``; ``**`` recurses),
    one checkpoint file, or a text file listing paths one per line (blank lines and lines
    starting with ``#`` skipped; relative paths are relative to the list file's folder).

    Raises:
        NoCheckpointsError: a folder or glob without checkpoint files (the message names
            subfolders that have some, e.g. Lightning's ``checkpoints/``).
        CheckpointSpecError: ``spec`` does not exist, or a listed file does not.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(path, recursive)
    if path.is_file():
        return [path] if is_checkpoint_file(path) else _from_list_file(path)
    if glob.has_magic(str(spec)):
        found = (Path(p) for p in glob.glob(str(path), recursive=True))
        matches = sorted({p for p in found if p.is_file() and is_checkpoint_file(p)})
        if not matches:
            raise NoCheckpointsError(f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) match {str(spec)!r}")
        return matches
    raise CheckpointSpecError(f"{str(spec)!r} is neither a folder, a file, nor a glob that matches files")


def _from_folder(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = sorted(p for p in candidates if p.is_file() and is_checkpoint_file(p) and not p.name.startswith("."))
    if found:
        return found
    subfolders = (d for d in sorted(folder.iterdir()) if d.is_dir())
    holders = [d.name + "/" for d in subfolders if any(map(is_checkpoint_file, d.iterdir()))]
    hint = ""
    if holders:
        hint = f"; checkpoints are in its subfolder(s) {', '.join(holders)}: pass that folder, or search recursively"
    raise NoCheckpointsError(f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in {folder}{hint}")


def _from_list_file(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        message = f"{list_file} is not a checkpoint and cannot be read as a list of paths: {error}"
        raise CheckpointSpecError(message) from error
    paths: list[Path] = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else list_file.parent / path
        if not path.is_file():
            raise CheckpointSpecError(f"{list_file}:{number}: {entry} is not a file")
        paths.append(path)
    if not paths:
        raise NoCheckpointsError(f"list file {list_file} names no checkpoint files")
    return sorted(set(paths))


def order_checkpoints(
    paths: Iterable[str | Path],
    regex: str | re.Pattern[str] | None = None,
    read_fields: Callable[[Path], Mapping[str, Any]] | None = None,
) -> CheckpointOrder:
    """``paths`` in training order, by the epoch (or step) their names carry; names with
    steps only (``iter_5000.pth``, ``step=500.ckpt``) are ordered by step (``order.by == "step"``).

    Args:
        regex: an epoch regex for names the built-in rules do not read (see
            :func:`~dse_tune.checkpoints.epochs.parse_position`).
        read_fields: ``path -> checkpoint dict`` (e.g. :func:`~dse_tune.checkpoints.read.read_checkpoint`):
            files without a number in the name are then placed by their stored epoch
            (:func:`~dse_tune.checkpoints.epochs.stored_position`) unless they copy a
            numbered file; without it they stay in ``unnumbered``.

    Raises:
        DuplicateEpochError: different files with the same epoch (and step).
        ValueError: names that mix epochs and steps, or an invalid ``regex``.
    """
    pattern = compile_epoch_regex(regex)
    source = "regex" if pattern is not None else "name"
    numbered: list[CheckpointFile] = []
    unnumbered: list[Path] = []
    for path in map(Path, paths):
        position = parse_position(path, pattern)
        if position.known:
            numbered.append(CheckpointFile(position.epoch, path, position.step, source))
        else:
            unnumbered.append(path)
    by = _order_by(numbered)
    _raise_on_duplicates(numbered, by)
    order = CheckpointOrder(by=by)
    order.ordered = list(numbered)
    _place_unnumbered(order, unnumbered, read_fields)
    order.ordered.sort(key=lambda item: (_key(item, order.by), str(item.path)))
    return order


def _order_by(files: list[CheckpointFile]) -> str:
    with_epoch = [item for item in files if item.epoch is not None]
    if len(with_epoch) == len(files):
        return "epoch"
    if not with_epoch:
        return "step"
    step_only = next(item for item in files if item.epoch is None)
    raise ValueError(
        f"checkpoint names mix epochs and steps ({with_epoch[0].path.name} has epoch {with_epoch[0].epoch}, "
        f"{step_only.path.name} only step {step_only.step}); give an epoch regex or list one kind"
    )


def _key(item: CheckpointFile | Position, by: str) -> tuple[int, ...]:
    if by == "epoch":
        return (item.epoch, -1 if item.step is None else item.step)
    return (item.step,)


def _raise_on_duplicates(files: list[CheckpointFile], by: str) -> None:
    groups: dict[tuple[int, ...], list[Path]] = defaultdict(list)
    for item in files:
        groups[_key(item, by)].append(item.path)
    clashes = {key: sorted(paths) for key, paths in groups.items() if len(paths) > 1}
    if clashes:
        raise DuplicateEpochError(clashes, by)


def _place_unnumbered(
    order: CheckpointOrder, unnumbered: list[Path], read_fields: Callable[[Path], Mapping[str, Any]] | None
) -> None:
    """Move unnumbered files to ``copies``, ``unreadable``, ``unnumbered`` or (by stored epoch) ``ordered``."""
    latest = max(order.ordered, key=lambda item: _key(item, order.by), default=None)

    @functools.cache
    def latest_stored() -> Position | None:
        """The latest numbered file's stored position, read once and only when needed."""
        try:
            return stored_position(read_fields(latest.path))
        except CheckpointReadError:  # its own turn to fail comes when it is scored
            return None

    placed: list[CheckpointFile] = []
    for path in sorted(unnumbered):
        copied = _copy_of(path, order.ordered, latest)
        if copied is not None:
            order.copies.append((path, copied))
            continue
        if read_fields is None:
            order.unnumbered.append(path)
            continue
        try:
            position = stored_position(read_fields(path))
        except CheckpointReadError as error:
            order.unreadable.append((path, error.cause))
            continue
        item = CheckpointFile(position.epoch, path, position.step, "stored")
        if (position.epoch if order.by == "epoch" else position.step) is None:
            order.unnumbered.append(path)
        elif latest is not None and position == latest_stored():
            order.copies.append((path, f"stores the same epoch/step as {latest.path.name}"))
        elif any(_key(other, order.by) == _key(item, order.by) for other in order.ordered):
            reason = f"stores {order.by} {_key(item, order.by)[0]}, which a numbered file already has"
            order.copies.append((path, reason))
        else:
            placed.append(item)
    _raise_on_duplicates(placed, order.by)
    order.ordered.extend(placed)


def _copy_of(path: Path, ordered: list[CheckpointFile], latest: CheckpointFile | None) -> str | None:
    """Why ``path`` duplicates an ordered file (same file, or the latest's bytes), or None."""
    for item in ordered:
        if os.path.exists(path) and os.path.exists(item.path) and os.path.samefile(path, item.path):
            return f"same file as {item.path.name}"
    if latest is not None and _same_bytes(path, latest.path):
        return f"same bytes as {latest.path.name}"
    return None


def _same_bytes(first: Path, second: Path) -> bool:
    try:
        return first.stat().st_size == second.stat().st_size and filecmp.cmp(first, second, shallow=False)
    except OSError:
        return False
