"""YAML search spaces for label-free sweeps: plain data, no Ray, no Optuna.

A search space file names the pretraining settings (any
:class:`~dse_tune.ssl.config.PretrainConfig` field, fixed or searched), the pruner, the
resources of a trial and where the sweep is stored. The schema is documented in
``docs/search_spaces.md``; in short::

    name: dino_vits16                  # sweep folder name (default: the file's stem)
    pretrain:                          # PretrainConfig fields
      method: dino                     #   fixed value
      lr: {loguniform: [1.0e-4, 2.0e-3]}
      teacher_momentum: {choice: [0.99, 0.996]}
      warmup_epochs: {randint: [5, 16]}    # integers 5..15 (high excluded, like Ray)
      drop_path_rate: {uniform: [0.0, 0.2]}
      dse_beta: {grid: [0.0, 0.05, 0.1]}   # every value, times num_samples
    search: {algorithm: optuna, num_samples: 8, max_concurrent_trials: 4, seed: 0}
    pruner: {type: dse_degradation, warmup: 5, patience: 3, min_drop: 0.1}
    resources: {cpu: 8, gpu: 1}        # per trial; gpu may be fractional (0.5)
    # or, a trial over several workers (Ray Train, one DDP process each):
    # resources: {workers: 4, gpus_per_worker: 1, cpus_per_worker: 8}
    storage: {path: runs/sweeps, checkpoints_to_keep: 3, max_failures: 2}
    selection: {window: 2, top: 3}     # + confirm_with: LABELLED_DIR, label_images: 32

:func:`load_search_space` refuses unknown keys (unknown PretrainConfig fields and pruner
options included), malformed ranges and values of the wrong type with a
:class:`SearchSpaceError` that names the file, the key and the reason (the checks live in
:mod:`dse_tune.search_space_parse`). The result is plain data: the adapters turn it into
their objects (:mod:`dse_tune.integrations.ray.space`: Tune domains and resources;
:mod:`dse_tune.integrations.optuna.space`: distributions and the pruner).

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

import dataclasses
import importlib.resources
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dse_tune.degradation import DegradationRule
from dse_tune.ssl.config import PretrainConfig

__all__ = [
    "ALGORITHMS",
    "DOMAIN_KINDS",
    "PRUNER_OPTIONS",
    "PRUNER_TYPES",
    "Dimension",
    "PrunerSpec",
    "Resources",
    "SearchSpaceError",
    "SweepSpec",
    "check_pruner_options",
    "load_search_space",
    "parse_search_space",
    "resolve_search_space",
    "shipped_search_spaces",
]

DOMAIN_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
#: ``optuna``: Ray's OptunaSearch (TPE by default); ``random``: Ray's variant generator
#: (random draws; the only one that expands ``grid`` dimensions).
ALGORITHMS = ("optuna", "random")
DEFAULT_STORAGE_PATH = "runs/sweeps"
#: Where the search space came from when the caller did not say.
UNNAMED_SOURCE = "<search space>"

#: Pruner type -> (module, class) of the Optuna pruner it builds; ``none`` disables
#: pruning. Only names: nothing is imported here (:data:`PRUNER_OPTIONS` says which
#: options each type takes).
PRUNER_TYPES: dict[str, tuple[str, str] | None] = {
    "dse_degradation": ("dse_tune.integrations.optuna", "DSEDegradationPruner"),
    "median": ("optuna.pruners", "MedianPruner"),
    "percentile": ("optuna.pruners", "PercentilePruner"),
    "patient": ("optuna.pruners", "PatientPruner"),
    "successive_halving": ("optuna.pruners", "SuccessiveHalvingPruner"),
    "hyperband": ("optuna.pruners", "HyperbandPruner"),
    "threshold": ("optuna.pruners", "ThresholdPruner"),
    "none": None,
}
#: PatientPruner wraps another pruner: its spec sits under this key.
WRAPPED_KEY = "wrapped"


# --------------------------------------------------------------------------- pruner options

#: An option check: ``value -> None`` when fine, else the reason it is refused.
OptionCheck = Callable[[Any], "str | None"]


def _integer_at_least(minimum: int) -> OptionCheck:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            return f"must be an integer >= {minimum}, got {value!r}"
        return None

    return check


def _number_in(low: float, high: float = math.inf) -> OptionCheck:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
            upper = "" if high == math.inf else f" and <= {high:g}"
            return f"must be a number >= {low:g}{upper}, got {value!r}"
        return None

    return check


def _auto_or_integer_at_least(minimum: int) -> OptionCheck:
    integer = _integer_at_least(minimum)

    def check(value: Any) -> str | None:
        if value == "auto" or integer(value) is None:
            return None
        return f"must be 'auto' or an integer >= {minimum}, got {value!r}"

    return check


def _number_or_null(value: Any) -> str | None:
    if value is None or (not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value)):
        return None
    return f"must be a number or null, got {value!r}"


_PERCENTILE_STEPS = {
    "n_startup_trials": _integer_at_least(0),
    "n_warmup_steps": _integer_at_least(0),
    "interval_steps": _integer_at_least(1),
    "n_min_trials": _integer_at_least(1),
}

#: Options of each pruner type -> their check. For Optuna's pruners these are the
#: constructors' keyword arguments and checks, written out so that parsing needs no
#: Optuna (a test keeps the table in step with Optuna's signatures).
PRUNER_OPTIONS: dict[str, dict[str, OptionCheck]] = {
    "median": dict(_PERCENTILE_STEPS),
    "percentile": {"percentile": _number_in(0.0, 100.0), **_PERCENTILE_STEPS},
    "patient": {"patience": _integer_at_least(0), "min_delta": _number_in(0.0)},
    "successive_halving": {
        "min_resource": _auto_or_integer_at_least(1),
        "reduction_factor": _integer_at_least(2),
        "min_early_stopping_rate": _integer_at_least(0),
        "bootstrap_count": _integer_at_least(0),
    },
    "hyperband": {
        "min_resource": _integer_at_least(1),
        "max_resource": _auto_or_integer_at_least(1),
        "reduction_factor": _integer_at_least(2),
        "bootstrap_count": _integer_at_least(0),
    },
    "threshold": {
        "lower": _number_or_null,
        "upper": _number_or_null,
        "n_warmup_steps": _integer_at_least(0),
        "interval_steps": _integer_at_least(1),
    },
    # DegradationRule checks its own values (see check_pruner_options).
    "dse_degradation": {f.name: lambda value: None for f in dataclasses.fields(DegradationRule)},
    "none": {},
}
_REQUIRED_OPTIONS = {"percentile": ("percentile",), "patient": ("patience",)}


def check_pruner_options(kind: str, options: Mapping[str, Any]) -> str | None:
    """Why the ``kind`` pruner would refuse ``options`` (known keys), or None.

    Example:
        >>> check_pruner_options("threshold", {"n_warmup_steps": 2})
        'lower or upper must be given'
        >>> check_pruner_options("dse_degradation", {"patience": 2}) is None
        True
    """
    if kind == "dse_degradation":
        try:
            DegradationRule(**options)
        except (TypeError, ValueError) as error:
            return str(error)
        return None
    for name in _REQUIRED_OPTIONS.get(kind, ()):
        if name not in options:
            return f"{name} is required"
    for name, value in options.items():
        reason = PRUNER_OPTIONS[kind][name](value)
        if reason:
            return f"{name} {reason}"
    if kind == "threshold":
        lower, upper = options.get("lower"), options.get("upper")
        if lower is None and upper is None:
            return "lower or upper must be given"
        if lower is not None and upper is not None and lower > upper:
            return f"lower must be <= upper, got {lower!r} > {upper!r}"
    resource = {"successive_halving": "min_resource", "hyperband": "max_resource"}.get(kind)
    if resource and options.get("bootstrap_count", 0) > 0 and options.get(resource, "auto") == "auto":
        return f"bootstrap_count > 0 needs an integer {resource}, not 'auto'"
    return None


class SearchSpaceError(ValueError):
    """A search space cannot be used; the message names the file, the key and why."""


# --------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class Dimension:
    """One searched PretrainConfig field.

    ``kind`` is one of :data:`DOMAIN_KINDS`; ``values`` holds the options of ``choice``
    and ``grid``; ``low``/``high`` the bounds of the ranges (``randint``: ``high``
    excluded, as in Ray and numpy).

    Example:
        >>> Dimension("warmup_epochs", "randint", low=1, high=4).corner_values()
        [1, 3]
    """

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None

    def to_dict(self) -> dict[str, list[Any]]:
        """The YAML form: ``{kind: options}`` or ``{kind: [low, high]}``."""
        if self.kind in ("choice", "grid"):
            return {self.kind: [plain(v) for v in self.values]}
        return {self.kind: [self.low, self.high]}

    def corner_values(self) -> list[Any]:
        """Values that bound the dimension: every option, or both ends of the range."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind == "randint":
            return [self.low, self.high - 1]
        return [self.low, self.high]


# --------------------------------------------------------------------------- pruner, resources


@dataclass(frozen=True)
class PrunerSpec:
    """A pruner by type (a key of :data:`PRUNER_TYPES`) and its keyword arguments.

    :func:`dse_tune.integrations.optuna.space.build_pruner` builds the Optuna pruner.
    """

    type: str = "dse_degradation"
    options: Mapping[str, Any] = field(default_factory=dict)
    wrapped: PrunerSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, **self.options}
        if self.type == "patient":
            out[WRAPPED_KEY] = None if self.wrapped is None else self.wrapped.to_dict()
        return out


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: its workers, and the CPUs and GPUs of each.

    One worker (the default) runs the trial in one process, Tune's function trainable;
    ``gpu`` may be a fraction (0.5: two small trials share a device). Several workers
    (``workers: 4, gpus_per_worker: 1, cpus_per_worker: 8``) run it as a Ray Train
    ``TorchTrainer`` inside the Tuner, one DDP process per worker.
    """

    #: CPUs of each worker (the trial's CPUs with one worker).
    cpu: float = 1.0
    #: GPUs of each worker: a fraction (one worker only) or a whole number.
    gpu: float = 0.0
    #: Training processes of one trial.
    workers: int = 1

    @property
    def accelerator(self) -> str:
        """The Lightning accelerator a trial with these resources uses."""
        return "gpu" if self.gpu > 0 else "cpu"

    @property
    def distributed(self) -> bool:
        """Whether a trial spans several workers (Ray Train) rather than one process."""
        return self.workers > 1

    def to_dict(self) -> dict[str, Any]:
        """The ``resources`` section: ``{cpu, gpu}`` for one worker, else per worker."""
        if not self.distributed:
            return {"cpu": self.cpu, "gpu": self.gpu}
        return {"workers": self.workers, "cpus_per_worker": self.cpu, "gpus_per_worker": self.gpu}


# --------------------------------------------------------------------------- the spec


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
    checkpoints_to_keep: int = 3
    max_failures: int = 1
    window: int = 2
    top: int = 3
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
            "search": {
                "algorithm": self.algorithm,
                "num_samples": self.num_samples,
                "max_concurrent_trials": self.max_concurrent_trials,
                "seed": self.sampler_seed,
            },
            "pruner": None if self.pruner is None else plain(self.pruner.to_dict()),
            "resources": self.resources.to_dict(),
            "storage": {
                "path": self.storage_path,
                "checkpoints_to_keep": self.checkpoints_to_keep,
                "max_failures": self.max_failures,
            },
            "selection": {"window": self.window, "top": self.top, "confirm_with": self.confirm_with,
                          "label_images": self.label_images},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def trial_config(self, sampled: Mapping[str, Any]) -> PretrainConfig:
        """The PretrainConfig of a trial: the fixed fields plus the sampled ones."""
        return PretrainConfig.from_dict({**self.fixed, **sampled})


# --------------------------------------------------------------------------- loading


def shipped_search_spaces() -> dict[str, Path]:
    """The example search spaces installed with dse_tune (``search_spaces/*.yaml``), by name."""
    folder = importlib.resources.files("dse_tune.search_spaces")
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def resolve_search_space(path: str | Path) -> Path:
    """``path`` itself if it exists, else the shipped space it names.

    ``dino``, ``dino.yaml`` and ``search_spaces/dino.yaml`` name the shipped
    ``dino.yaml`` when no such file exists here, so the examples work from any folder
    and from a wheel install. A path into any other folder is never redirected.
    """
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("search_spaces")):
        return path
    return shipped_search_spaces().get(path.name.removesuffix(".yaml"), path)


def load_search_space(path: str | Path) -> SweepSpec:
    """Read and check a YAML search space; raise :class:`SearchSpaceError` if unusable.

    ``path`` may also name a shipped example (:func:`resolve_search_space`).
    """
    from dse_tune.search_space_parse import read_yaml

    path = resolve_search_space(path)
    if not path.exists():
        shipped = ", ".join(sorted(shipped_search_spaces()))
        raise SearchSpaceError(f"{path}: cannot read the search space: no such file (shipped examples: {shipped})")
    return parse_search_space(read_yaml(path), source=path)


def parse_search_space(data: Any, source: str | Path = UNNAMED_SOURCE) -> SweepSpec:
    """Check a search space given as a mapping (what the YAML file holds)."""
    # The section checks build this module's classes, so they are imported here.
    from dse_tune import search_space_parse as sections

    where = str(source)
    data = sections.top_level(where, data)
    fixed, dimensions = sections.pretrain(where, data)
    search = sections.search(where, data, dimensions)
    storage = sections.storage(where, data)
    selection = sections.selection(where, data)
    return SweepSpec(
        name=sections.sweep_name(where, data),
        fixed=fixed,
        dimensions=dimensions,
        algorithm=search["algorithm"],
        num_samples=search["num_samples"],
        max_concurrent_trials=search["max_concurrent_trials"],
        sampler_seed=search["seed"],
        pruner=sections.pruner(where, "pruner", data.get("pruner", {"type": "dse_degradation"})),
        resources=sections.resources(where, data),
        storage_path=storage["path"],
        checkpoints_to_keep=storage["checkpoints_to_keep"],
        max_failures=storage["max_failures"],
        window=selection["window"],
        top=selection["top"],
        confirm_with=selection["confirm_with"],
        label_images=selection["label_images"],
        source=None if where == UNNAMED_SOURCE else Path(where),
    )


def plain(value: Any) -> Any:
    """Tuples to lists, recursively (YAML's safe dumper knows no tuples).

    Example:
        >>> plain({"scale": (0.3, 1.0)})
        {'scale': [0.3, 1.0]}
    """
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value
