"""The vocabulary of search spaces: domain kinds, pruner types and their options,
dimensions, resources, and the error every check raises. Plain data, no Ray, no Optuna.

Shared by :mod:`dse_tune.search_space` and :mod:`dse_tune.search_space_parse` (no cycle).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dse_tune.arguments import is_int_at_least
from dse_tune.degradation import DegradationRule

__all__ = [
    "ALGORITHMS",
    "DEFAULT_STORAGE_PATH",
    "DOMAIN_KINDS",
    "PRUNER_OPTIONS",
    "PRUNER_TYPES",
    "UNNAMED_SOURCE",
    "WRAPPED_KEY",
    "Dimension",
    "PrunerSpec",
    "Resources",
    "SearchSpaceError",
    "check_pruner_options",
    "plain",
]

DOMAIN_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
#: ``optuna``: Ray's OptunaSearch (TPE by default); ``random``: Ray's variant generator
#: (random draws; the only one that expands ``grid`` dimensions).
ALGORITHMS = ("optuna", "random")
DEFAULT_STORAGE_PATH = "runs/sweeps"
#: Where the search space came from when the caller did not say.
UNNAMED_SOURCE = "<search space>"

#: Pruner type -> (module, class) of the Optuna pruner it builds (names only, nothing is
#: imported here); ``none`` disables pruning.
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


#: An option check: ``value -> None`` when fine, else the reason it is refused.
OptionCheck = Callable[[Any], "str | None"]


def integer_at_least(minimum: int, *, auto: bool = False) -> OptionCheck:
    """A check for an integer >= ``minimum`` (``auto``: the text ``'auto'`` too)."""
    wanted = ("'auto' or " if auto else "") + f"an integer >= {minimum}"

    def check(value: Any) -> str | None:
        if auto and value == "auto":
            return None
        if not is_int_at_least(value, minimum):
            return f"must be {wanted}, got {value!r}"
        return None

    return check


def _number_in(low: float, high: float = math.inf) -> OptionCheck:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
            upper = "" if high == math.inf else f" and <= {high:g}"
            return f"must be a number >= {low:g}{upper}, got {value!r}"
        return None

    return check


def _number_or_null(value: Any) -> str | None:
    if value is None or (not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value)):
        return None
    return f"must be a number or null, got {value!r}"


_PERCENTILE_STEPS = {
    "n_startup_trials": integer_at_least(0),
    "n_warmup_steps": integer_at_least(0),
    "interval_steps": integer_at_least(1),
    "n_min_trials": integer_at_least(1),
}

#: Options of each pruner type -> their check. For Optuna's pruners these are the
#: constructors' keyword arguments and checks, written out so that parsing needs no
#: Optuna (a test keeps the table in step with Optuna's signatures).
PRUNER_OPTIONS: dict[str, dict[str, OptionCheck]] = {
    "median": dict(_PERCENTILE_STEPS),
    "percentile": {"percentile": _number_in(0.0, 100.0), **_PERCENTILE_STEPS},
    "patient": {"patience": integer_at_least(0), "min_delta": _number_in(0.0)},
    "successive_halving": {
        "min_resource": integer_at_least(1, auto=True),
        "reduction_factor": integer_at_least(2),
        "min_early_stopping_rate": integer_at_least(0),
        "bootstrap_count": integer_at_least(0),
    },
    "hyperband": {
        "min_resource": integer_at_least(1),
        "max_resource": integer_at_least(1, auto=True),
        "reduction_factor": integer_at_least(2),
        "bootstrap_count": integer_at_least(0),
    },
    "threshold": {
        "lower": _number_or_null,
        "upper": _number_or_null,
        "n_warmup_steps": integer_at_least(0),
        "interval_steps": integer_at_least(1),
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

    __module__ = "dse_tune.search_space"  # its public address


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


@dataclass(frozen=True)
class PrunerSpec:
    """A pruner by type (a key of :data:`PRUNER_TYPES`) and its keyword arguments; the
    Optuna pruner is built by :func:`dse_tune.integrations.optuna.space.build_pruner`."""

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

    One worker (the default) runs the trial in one process, with ``cpu`` CPUs and ``gpu``
    GPUs (a fraction shares a device); several workers run it as a Ray Train
    ``TorchTrainer``, one DDP process per worker, each with ``cpu`` CPUs and ``gpu`` GPUs.
    """

    cpu: float = 1.0
    gpu: float = 0.0
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
