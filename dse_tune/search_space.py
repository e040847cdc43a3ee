"""YAML search spaces for label-free sweeps: plain data, no Ray, no Optuna.

A search space file names the pretraining settings (any
:class:`~dse_tune.pretrain_config.PretrainConfig` field, fixed or searched with
``{choice|grid|uniform|loguniform|randint: ...}``), the search, the pruner, the resources
of a trial, where the sweep is stored and how it is selected: the schema is in
``docs/search_spaces.md``. :func:`load_search_space` refuses unknown keys, malformed
ranges and values of the wrong type with a :class:`SearchSpaceError` naming the file, the
key and the reason (the checks: :mod:`dse_tune.search_space_parse`). The adapters turn
the plain result into their objects (``integrations/ray/space.py``, ``integrations/optuna/space.py``).

Example:
    >>> spec = parse_search_space({
    ...     "pretrain": {"epochs": 4, "lr": {"loguniform": [1e-4, 1e-3]},
    ...                  "dse_beta": {"grid": [0.0, 0.1]}},
    ...     "search": {"num_samples": 2},
    ... }, source="example.yaml")
    >>> spec.name, spec.algorithm, spec.total_trials
    ('example', 'random', 4)
    >>> sorted(spec.dimensions), spec.fixed["epochs"]
    (['dse_beta', 'lr'], 4)
    >>> spec.dimensions["lr"].to_dict()
    {'loguniform': [0.0001, 0.001]}
    >>> parse_search_space({"pretrain": {"lr": {"uniform": [0.1, 0.01]}}}, source="bad.yaml")
    Traceback (most recent call last):
    ...
    dse_tune.search_space.SearchSpaceError: bad.yaml: pretrain.lr: uniform needs low < high, got [0.1, 0.01]
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dse_tune import search_space_parse as sections
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.pretrain_config import PretrainConfig
from dse_tune.search_space_schema import (
    DEFAULT_STORAGE_PATH,
    PRUNER_OPTIONS,
    PRUNER_TYPES,
    UNNAMED_SOURCE,
    Dimension,
    PrunerSpec,
    Resources,
    SearchSpaceError,
    plain,
)
from dse_tune.typed_config import read_yaml

__all__ = [
    "PRUNER_OPTIONS",
    "PRUNER_TYPES",
    "Dimension",
    "PrunerSpec",
    "Resources",
    "SearchSpaceError",
    "SweepSpec",
    "load_search_space",
    "parse_search_space",
    "resolve_search_space",
    "shipped_search_spaces",
]


@dataclass(frozen=True)
class SweepSpec:
    """A parsed search space (see the module docstring and ``docs/search_spaces.md``)."""

    name: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    dimensions: Mapping[str, Dimension] = field(default_factory=dict)
    algorithm: str = "optuna"
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    sampler_seed: int | None = None
    pruner: PrunerSpec | None = field(default_factory=PrunerSpec)
    resources: Resources = field(default_factory=Resources)
    storage_path: str = DEFAULT_STORAGE_PATH
    max_failures: int = 1
    window: int = CANDIDATE_WINDOW
    top: int = CANDIDATE_TOP
    #: Labelled folder for few-label confirmation of the choice (None: label-free).
    confirm_with: str | None = None
    label_images: int = 32
    source: Path | None = None

    @property
    def grid_size(self) -> int:
        """Number of combinations of the ``grid`` dimensions (1 without any)."""
        return math.prod(len(d.values) for d in self.dimensions.values() if d.kind == "grid")

    @property
    def total_trials(self) -> int:
        """Trials the sweep runs: ``num_samples`` times every grid combination."""
        return self.num_samples * self.grid_size

    def base_config(self) -> dict[str, Any]:
        """The fixed PretrainConfig fields (searched fields come from each trial)."""
        return dict(self.fixed)

    def to_dict(self) -> dict[str, Any]:
        """The search space in the file schema; :func:`parse_search_space` reads it back."""
        pretrain = {name: plain(value) for name, value in self.fixed.items()}
        pretrain.update({name: d.to_dict() for name, d in self.dimensions.items()})
        return {
            "name": self.name,
            "pretrain": pretrain,
            "search": {"algorithm": self.algorithm, "num_samples": self.num_samples,
                       "max_concurrent_trials": self.max_concurrent_trials, "seed": self.sampler_seed},
            "pruner": None if self.pruner is None else plain(self.pruner.to_dict()),
            "resources": self.resources.to_dict(),
            "storage": {"path": self.storage_path, "max_failures": self.max_failures},
            "selection": {"window": self.window, "top": self.top, "confirm_with": self.confirm_with,
                          "label_images": self.label_images},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def trial_config(self, sampled: Mapping[str, Any]) -> PretrainConfig:
        """The PretrainConfig of a trial: the fixed fields plus the sampled ones."""
        return PretrainConfig.from_dict({**self.fixed, **sampled})


def shipped_search_spaces() -> dict[str, Path]:
    """The example search spaces installed with dse_tune (``search_spaces/*.yaml``), by name."""
    folder = importlib.resources.files("dse_tune.search_spaces")
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def resolve_search_space(path: str | Path) -> Path:
    """``path`` itself if it exists, else the shipped space it names (``dino``, ``dino.yaml``
    or ``search_spaces/dino.yaml``: a path into any other folder is never redirected)."""
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("search_spaces")):
        return path
    return shipped_search_spaces().get(path.name.removesuffix(".yaml"), path)


def load_search_space(path: str | Path) -> SweepSpec:
    """Read and check a YAML search space (or a shipped one, :func:`resolve_search_space`);
    raise :class:`SearchSpaceError` if unusable."""
    path = resolve_search_space(path)
    if not path.exists():
        shipped = ", ".join(sorted(shipped_search_spaces()))
        raise SearchSpaceError(f"{path}: cannot read the search space: no such file (shipped examples: {shipped})")
    return parse_search_space(read_yaml(path, SearchSpaceError), source=path)


def parse_search_space(data: Any, source: str | Path = UNNAMED_SOURCE) -> SweepSpec:
    """Check a search space given as a mapping (what the YAML file holds)."""
    where = str(source)
    data = sections.top_level(where, data)
    fixed, dimensions = sections.pretrain(where, data)
    return SweepSpec(
        name=sections.sweep_name(where, data),
        fixed=fixed,
        dimensions=dimensions,
        **sections.search(where, data, dimensions),
        pruner=sections.pruner(where, "pruner", data.get("pruner", {"type": "dse_degradation"})),
        resources=sections.resources(where, data),
        **sections.storage(where, data),
        **sections.selection(where, data),
        source=None if where == UNNAMED_SOURCE else Path(where),
    )
