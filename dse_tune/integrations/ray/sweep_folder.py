"""What a sweep folder keeps besides its runs: the space, the start record, the summary.

A sweep folder (``SWEEP_DIR``) holds Ray Tune's state and trial folders
(:data:`dse_tune.runs.TUNER_STATE_FILE`: :func:`dse_tune.runs.is_sweep`), one run folder
per trial under ``runs/`` (:mod:`dse_tune.runs`), and these files:

- :data:`SPACE_COPY`: the normalized search space, what a resumed sweep reparses (not
  the original file: a spec may come from code);
- :data:`SWEEP_FILE`: name, source, data and number of trials the sweep started with;
- :data:`SUMMARY_FILE`: the final :class:`~dse_tune.integrations.ray.summary.SweepSummary`.

Example:
    >>> import tempfile
    >>> from dse_tune.search_space import parse_search_space
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_sweep_record(parse_search_space({"name": "demo"}), folder, data="synthetic")
    >>> load_saved_spec(folder).name, saved_data(folder)
    ('demo', 'synthetic')
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dse_tune.atomic import atomic_write_text
from dse_tune.integrations.ray.trainable import read_json, write_json

if TYPE_CHECKING:
    from dse_tune.search_space import SweepSpec

__all__ = [
    "SPACE_COPY",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "absolute_data",
    "load_saved_spec",
    "save_sweep_record",
    "saved_data",
]

SPACE_COPY = "search_space.yaml"
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "sweep_summary.json"


def save_sweep_record(spec: SweepSpec, sweep_dir: Path, data: str | None) -> None:
    """Write :data:`SPACE_COPY` and :data:`SWEEP_FILE` into ``sweep_dir`` (created)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / SPACE_COPY, spec.to_yaml())
    write_json(
        sweep_dir / SWEEP_FILE,
        {
            "name": spec.name,
            "space": SPACE_COPY,
            "source": None if spec.source is None else str(spec.source),
            "data": data,
            "total_trials": spec.total_trials,
            "created": time.time(),
        },
    )


def load_saved_spec(sweep_dir: str | os.PathLike) -> SweepSpec:
    """The search space a sweep folder was started with (its normalized copy)."""
    from dse_tune.search_space import load_search_space

    sweep_dir = Path(sweep_dir)
    space = sweep_dir / SPACE_COPY
    if not space.is_file():
        raise FileNotFoundError(f"{sweep_dir} has no {SPACE_COPY}; it was not started by dse_tune's sweep")
    return load_search_space(space)


def saved_data(sweep_dir: str | os.PathLike) -> str | None:
    """The data the sweep was started with (None: each trial's configured data)."""
    return (read_json(Path(sweep_dir) / SWEEP_FILE) or {}).get("data")


def absolute_data(data: str | os.PathLike | None) -> str | None:
    """``data`` with a relative folder made absolute: trials run in their own folders.

    Example:
        >>> absolute_data("synthetic"), absolute_data(None)
        ('synthetic', None)
    """
    if data is None or str(data) == "synthetic":
        return None if data is None else "synthetic"
    return str(Path(data).expanduser().resolve())
