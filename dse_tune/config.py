"""YAML search spaces for label-free sweeps -> Ray Tune param spaces / Optuna distributions.

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
    storage: {path: runs/sweeps, checkpoints_to_keep: 3, max_failures: 2}
    selection: {window: 2, top: 3}

:func:`load_search_space` refuses unknown keys (unknown PretrainConfig fields
included), malformed ranges and values of the wrong type with a :class:`SearchSpaceError`
that names the file, the key and the reason. Ray and Optuna are imported only by the
methods that build their objects, so parsing is cheap.

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
    >>> parse_search_space({"pretrain": {"lr": {"uniform": [0.1, 0.01]}}}, source="bad.yaml")
    Traceback (most recent call last):
    ...
    dse_tune.config.SearchSpaceError: bad.yaml: pretrain.lr: uniform needs low < high, got [0.1, 0.01]
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import inspect
import math
import numbers
import re
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dse_tune.ssl.config import PretrainConfig

__all__ = [
    "ALGORITHMS",
    "DOMAIN_KINDS",
    "PRUNER_TYPES",
    "Dimension",
    "PrunerSpec",
    "Resources",
    "SearchSpaceError",
    "SweepSpec",
    "load_search_space",
    "resolve_search_space",
    "shipped_search_spaces",
    "parse_search_space",
]

DOMAIN_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
#: ``optuna``: Ray's OptunaSearch (TPE by default); ``random``: Ray's variant generator
#: (random draws; the only one that expands ``grid`` dimensions).
ALGORITHMS = ("optuna", "random")
TOP_LEVEL_KEYS = ("name", "pretrain", "search", "pruner", "resources", "storage", "selection")
SEARCH_KEYS = ("algorithm", "num_samples", "max_concurrent_trials", "seed")
RESOURCE_KEYS = ("cpu", "gpu")
STORAGE_KEYS = ("path", "checkpoints_to_keep", "max_failures")
SELECTION_KEYS = ("window", "top")
DEFAULT_STORAGE_PATH = "runs/sweeps"

# pruner type -> (module, class); "none" disables pruning.
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
# PatientPruner wraps another pruner: its spec sits under this key.
_WRAPPED_KEY = "wrapped"


class SearchSpaceError(ValueError):
    """A search space cannot be used; the message names the file, the key and why."""


# --------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class Dimension:
    """One searched PretrainConfig field.

    ``kind`` is one of :data:`DOMAIN_KINDS`; ``values`` holds the options of ``choice``
    and ``grid``; ``low``/``high`` the bounds of the ranges (``randint``: ``high``
    excluded, as in Ray and numpy).
    """

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None

    def to_tune(self) -> Any:
        """The Ray Tune domain (``tune.choice``, ``tune.grid_search``, ...)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.randint(self.low, self.high)

    def to_optuna(self) -> Any:
        """The Optuna distribution (``grid`` becomes a categorical one)."""
        from optuna import distributions

        if self.kind in ("choice", "grid"):
            return distributions.CategoricalDistribution(list(self.values))
        if self.kind == "uniform":
            return distributions.FloatDistribution(float(self.low), float(self.high))
        if self.kind == "loguniform":
            return distributions.FloatDistribution(float(self.low), float(self.high), log=True)
        return distributions.IntDistribution(int(self.low), int(self.high) - 1)

    def to_dict(self) -> dict[str, list[Any]]:
        """The YAML form: ``{kind: options}`` or ``{kind: [low, high]}``."""
        if self.kind in ("choice", "grid"):
            return {self.kind: [_plain(v) for v in self.values]}
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
    """A pruner by type (a key of :data:`PRUNER_TYPES`) and its keyword arguments."""

    type: str = "dse_degradation"
    options: Mapping[str, Any] = field(default_factory=dict)
    wrapped: PrunerSpec | None = None

    def build(self) -> Any:
        """The Optuna pruner, or None for ``type: none``."""
        target = PRUNER_TYPES[self.type]
        if target is None:
            return None
        pruner_class = _import(*target)
        options = dict(self.options)
        if self.type == "patient":
            options["wrapped_pruner"] = None if self.wrapped is None else self.wrapped.build()
        with warnings.catch_warnings():
            # Optuna flags PatientPruner & co. as experimental; the spec chose them.
            warnings.filterwarnings("ignore", message=".*experimental.*")
            return pruner_class(**options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, **self.options}
        if self.type == "patient":
            out[_WRAPPED_KEY] = None if self.wrapped is None else self.wrapped.to_dict()
        return out


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: CPUs and GPUs (fractional GPUs share a device)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def to_tune(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}

    @property
    def accelerator(self) -> str:
        """The Lightning accelerator a trial with these resources uses."""
        return "gpu" if self.gpu > 0 else "cpu"


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

    def param_space(self) -> dict[str, Any]:
        """Ray Tune param space of the searched fields."""
        return {name: dimension.to_tune() for name, dimension in self.dimensions.items()}

    def optuna_distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched fields (for ``trial._suggest`` /
        ``optuna.distributions``-based objectives); ``grid`` dimensions become
        categorical ones (use :meth:`optuna_grid` with ``optuna.samplers.GridSampler``
        to enumerate them)."""
        return {name: dimension.to_optuna() for name, dimension in self.dimensions.items()}

    def optuna_grid(self) -> dict[str, list[Any]]:
        """``GridSampler`` search space of the ``grid`` dimensions."""
        return {n: list(d.values) for n, d in self.dimensions.items() if d.kind == "grid"}

    def build_pruner(self) -> Any:
        """The Optuna pruner the sweep's stopper wraps, or None (no pruning)."""
        return None if self.pruner is None else self.pruner.build()

    def to_dict(self) -> dict[str, Any]:
        """The search space in the file schema; :func:`parse_search_space` reads it back."""
        pretrain = {name: _plain(value) for name, value in self.fixed.items()}
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
            "pruner": None if self.pruner is None else _plain(self.pruner.to_dict()),
            "resources": {"cpu": self.resources.cpu, "gpu": self.resources.gpu},
            "storage": {
                "path": self.storage_path,
                "checkpoints_to_keep": self.checkpoints_to_keep,
                "max_failures": self.max_failures,
            },
            "selection": {"window": self.window, "top": self.top},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def trial_config(self, sampled: Mapping[str, Any]) -> PretrainConfig:
        """The PretrainConfig of a trial: the fixed fields plus the sampled ones."""
        return PretrainConfig.from_dict({**self.fixed, **sampled})


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


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
    path = resolve_search_space(path)
    if not path.exists():
        shipped = ", ".join(sorted(shipped_search_spaces()))
        raise SearchSpaceError(f"{path}: cannot read the search space: no such file (shipped examples: {shipped})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SearchSpaceError(f"{path}: cannot read the search space: {error.strerror or error}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise SearchSpaceError(f"{path}: not valid YAML: {error}") from None
    return parse_search_space(data, source=path)


def parse_search_space(data: Any, source: str | Path = "<search space>") -> SweepSpec:
    """Check a search space given as a mapping (what the YAML file holds)."""
    where = str(source)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping of sections, got {_kind(data)}")
    _refuse_unknown(where, "", data, TOP_LEVEL_KEYS)

    name = data.get("name", Path(where).stem if where != "<search space>" else "sweep")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SearchSpaceError(
            f"{where}: name: must be a folder name (letters, digits, '.', '_', '-'), got {name!r}"
        )

    fixed, dimensions = _parse_pretrain(where, _section(where, data, "pretrain"))

    search = _section(where, data, "search")
    _refuse_unknown(where, "search.", search, SEARCH_KEYS)
    has_grid = any(d.kind == "grid" for d in dimensions.values())
    algorithm = search.get("algorithm", "random" if has_grid else "optuna")
    if algorithm not in ALGORITHMS:
        raise SearchSpaceError(f"{where}: search.algorithm: must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "optuna" and has_grid:
        grids = sorted(n for n, d in dimensions.items() if d.kind == "grid")
        raise SearchSpaceError(
            f"{where}: search.algorithm: optuna cannot enumerate grid dimensions {grids} inside "
            "Ray Tune; use algorithm: random (grid x num_samples random draws) or choice instead of grid"
        )
    if algorithm == "optuna":
        for dim_name, dimension in dimensions.items():
            for value in dimension.values:
                if value is not None and not isinstance(value, (bool, int, float, str)):
                    raise SearchSpaceError(
                        f"{where}: pretrain.{dim_name}: optuna's categorical distribution needs "
                        f"scalar options, got {value!r}; use search.algorithm: random"
                    )
    num_samples = _integer(where, "search.num_samples", search.get("num_samples", 1), minimum=1)
    concurrent = search.get("max_concurrent_trials")
    if concurrent is not None:
        concurrent = _integer(where, "search.max_concurrent_trials", concurrent, minimum=1)
    seed = search.get("seed")
    if seed is not None:
        seed = _integer(where, "search.seed", seed, minimum=0)

    pruner = _parse_pruner(where, "pruner", data.get("pruner", {"type": "dse_degradation"}))

    resources_section = _section(where, data, "resources")
    _refuse_unknown(where, "resources.", resources_section, RESOURCE_KEYS)
    cpu = _number(where, "resources.cpu", resources_section.get("cpu", 1))
    gpu = _number(where, "resources.gpu", resources_section.get("gpu", 0))
    if cpu <= 0:
        raise SearchSpaceError(f"{where}: resources.cpu: must be > 0 (CPUs per trial), got {cpu!r}")
    if gpu < 0:
        raise SearchSpaceError(f"{where}: resources.gpu: must be >= 0 (GPUs per trial), got {gpu!r}")
    if gpu > 1 and gpu != int(gpu):
        raise SearchSpaceError(
            f"{where}: resources.gpu: a fraction shares one GPU, so it must be <= 1 or a whole number, got {gpu!r}"
        )

    storage = _section(where, data, "storage")
    _refuse_unknown(where, "storage.", storage, STORAGE_KEYS)
    storage_path = storage.get("path", DEFAULT_STORAGE_PATH)
    if not isinstance(storage_path, str) or not storage_path:
        raise SearchSpaceError(f"{where}: storage.path: must be a folder path, got {storage_path!r}")
    if "://" in storage_path:
        raise SearchSpaceError(
            f"{where}: storage.path: must be a local or shared (NFS) folder, got the URI {storage_path!r}; "
            "the selector reads every trial's run folder from it"
        )
    keep = _integer(where, "storage.checkpoints_to_keep", storage.get("checkpoints_to_keep", 3), minimum=1)
    max_failures = _integer(where, "storage.max_failures", storage.get("max_failures", 1), minimum=0)

    selection = _section(where, data, "selection")
    _refuse_unknown(where, "selection.", selection, SELECTION_KEYS)
    window = _integer(where, "selection.window", selection.get("window", 2), minimum=0)
    top = _integer(where, "selection.top", selection.get("top", 3), minimum=1)

    return SweepSpec(
        name=name,
        fixed=fixed,
        dimensions=dimensions,
        algorithm=algorithm,
        num_samples=num_samples,
        max_concurrent_trials=concurrent,
        sampler_seed=seed,
        pruner=pruner,
        resources=Resources(cpu=float(cpu), gpu=float(gpu)),
        storage_path=storage_path,
        checkpoints_to_keep=keep,
        max_failures=max_failures,
        window=window,
        top=top,
        source=None if where == "<search space>" else Path(where),
    )


# --------------------------------------------------------------------------- sections


def _parse_pretrain(where: str, section: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Dimension]]:
    hints = _field_hints()
    fixed: dict[str, Any] = {}
    dimensions: dict[str, Dimension] = {}
    for key, value in section.items():
        label = f"pretrain.{key}"
        if key not in hints:
            close = _suggest(str(key), hints)
            raise SearchSpaceError(f"{where}: {label}: not a PretrainConfig field{close}")
        hint = hints[key]
        if _is_domain(value):
            dimensions[key] = _parse_dimension(where, label, key, value, hint)
        else:
            if isinstance(value, Mapping) and not _accepts_mapping(hint):
                raise SearchSpaceError(
                    f"{where}: {label}: a search domain is a mapping with one key out of "
                    f"{DOMAIN_KINDS}, got {dict(value)!r}"
                )
            _check_type(where, label, value, hint)
            fixed[key] = value

    # Every option (or range end) of every dimension must give a usable PretrainConfig,
    # so that a bad value fails here and not hours into the sweep: the fixed values
    # alone, then each option with the fixed values, then all first options together.
    _check_config(where, "pretrain", fixed)
    for name, dimension in dimensions.items():
        for value in dimension.corner_values():
            _check_config(where, f"pretrain.{name}={value!r}", {**fixed, name: value})
    first = {name: d.corner_values()[0] for name, d in dimensions.items()}
    _check_config(where, "pretrain (first option of every searched field)", {**fixed, **first})
    return fixed, dimensions


def _parse_dimension(where: str, label: str, name: str, spec: Mapping[str, Any], hint: Any) -> Dimension:
    ((kind, arguments),) = spec.items()
    if kind in ("choice", "grid"):
        if not isinstance(arguments, (list, tuple)) or not arguments:
            raise SearchSpaceError(f"{where}: {label}: {kind} needs a non-empty list of options, got {arguments!r}")
        for option in arguments:
            _check_type(where, f"{label} ({kind} option)", option, hint)
        if len({repr(option) for option in arguments}) != len(arguments):
            raise SearchSpaceError(f"{where}: {label}: {kind} lists an option twice: {list(arguments)!r}")
        return Dimension(name, kind, values=tuple(arguments))

    if not isinstance(arguments, (list, tuple)) or len(arguments) != 2:
        raise SearchSpaceError(f"{where}: {label}: {kind} needs [low, high], got {arguments!r}")
    low, high = arguments
    for bound_name, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not math.isfinite(bound):
            raise SearchSpaceError(f"{where}: {label}: {kind} {bound_name} must be a finite number, got {bound!r}")
    if kind == "randint":
        if not all(isinstance(b, numbers.Integral) for b in (low, high)):
            raise SearchSpaceError(f"{where}: {label}: randint needs integer bounds, got {list(arguments)!r}")
        if not _accepts(hint, int):
            raise SearchSpaceError(f"{where}: {label}: randint draws integers but {name} is {_hint_name(hint)}")
    elif not _accepts(hint, float):
        raise SearchSpaceError(
            f"{where}: {label}: {kind} draws floats but {name} is {_hint_name(hint)}; "
            "use randint or choice for integer fields"
        )
    if not low < high:
        raise SearchSpaceError(f"{where}: {label}: {kind} needs low < high, got {list(arguments)!r}")
    if kind == "loguniform" and low <= 0:
        raise SearchSpaceError(f"{where}: {label}: loguniform needs 0 < low, got {list(arguments)!r}")
    return Dimension(name, kind, low=low, high=high)


def _parse_pruner(where: str, label: str, value: Any) -> PrunerSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping):
        raise SearchSpaceError(f"{where}: {label}: expected a mapping with 'type', got {_kind(value)}")
    kind = value.get("type", "dse_degradation")
    if kind not in PRUNER_TYPES:
        raise SearchSpaceError(f"{where}: {label}.type: must be one of {tuple(PRUNER_TYPES)}, got {kind!r}")
    if PRUNER_TYPES[kind] is None:
        _refuse_unknown(where, f"{label}.", value, ("type",))
        return None
    pruner_class = _import(*PRUNER_TYPES[kind])
    parameters = inspect.signature(pruner_class.__init__).parameters
    allowed = [p for p in parameters if p not in ("self", "rule", "wrapped_pruner")]
    if kind == "patient":
        allowed.append(_WRAPPED_KEY)
    options = {k: v for k, v in value.items() if k != "type"}
    _refuse_unknown(where, f"{label}.", options, tuple(allowed))
    wrapped = None
    if kind == "patient":
        wrapped = _parse_pruner(where, f"{label}.{_WRAPPED_KEY}", options.pop(_WRAPPED_KEY, None))
    spec = PrunerSpec(kind, options, wrapped)
    try:
        spec.build()
    except (TypeError, ValueError) as error:
        raise SearchSpaceError(f"{where}: {label}: {kind} pruner refuses {options!r}: {error}") from None
    return spec


# --------------------------------------------------------------------------- checks


def _field_hints() -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    hints = typing.get_type_hints(PretrainConfig)
    return {name: hints[name] for name in names}


def _is_domain(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DOMAIN_KINDS


def _accepts_mapping(hint: Any) -> bool:
    return any(typing.get_origin(option) is dict or option is dict for option in _options(hint))


def _options(hint: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return (hint,)


def _accepts(hint: Any, kind: type) -> bool:
    return any(option is kind or (kind is int and option is float) for option in _options(hint))


def _conforms(value: Any, hint: Any) -> bool:
    for option in _options(hint):
        origin = typing.get_origin(option)
        if option is Any:
            return True
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return True
        if option is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
        if (origin is dict or option is dict) and isinstance(value, Mapping):
            return all(isinstance(k, str) for k in value)
        if origin is tuple and isinstance(value, (list, tuple)):
            arguments = typing.get_args(option)
            if len(arguments) == 2 and arguments[1] is Ellipsis:
                if all(_conforms(item, arguments[0]) for item in value):
                    return True
            elif len(arguments) == len(value) and all(
                _conforms(item, item_hint) for item, item_hint in zip(value, arguments, strict=True)
            ):
                return True
    return False


def _check_type(where: str, label: str, value: Any, hint: Any) -> None:
    if not _conforms(value, hint):
        raise SearchSpaceError(f"{where}: {label}: expected {_hint_name(hint)}, got {value!r} ({_kind(value)})")


def _check_config(where: str, label: str, values: Mapping[str, Any]) -> None:
    try:
        PretrainConfig.from_dict(values).validate()
    except (TypeError, ValueError) as error:
        raise SearchSpaceError(f"{where}: {label}: not a valid pretraining setting: {error}") from None


def _hint_name(hint: Any) -> str:
    names = []
    for option in _options(hint):
        if option is type(None):
            names.append("null")
        elif typing.get_origin(option) is tuple:
            names.append("a list " + str(option).replace("typing.", ""))
        elif typing.get_origin(option) is dict or option is dict:
            names.append("a mapping")
        else:
            names.append(getattr(option, "__name__", str(option)))
    text = " or ".join(names)
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false"}.get(text, text)


def _section(where: str, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SearchSpaceError(f"{where}: {key}: expected a mapping, got {_kind(value)}")
    return value


def _refuse_unknown(where: str, prefix: str, section: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in section:
        if key not in known:
            raise SearchSpaceError(
                f"{where}: {prefix}{key}: unknown key{_suggest(str(key), known)}; known keys: {', '.join(known)}"
            )


def _suggest(key: str, known: Any) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _integer(where: str, label: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SearchSpaceError(f"{where}: {label}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(where: str, label: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SearchSpaceError(f"{where}: {label}: must be a number, got {value!r}")
    return float(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (YAML's safe dumper knows no tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _import(module_name: str, attribute: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module_name), attribute)
