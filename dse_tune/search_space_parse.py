"""How each section of a search space file is read and checked.

:func:`dse_tune.search_space.parse_search_space` calls one function per section; each
returns plain values and raises a ``SearchSpaceError`` naming the file, the key and the
reason. Pruner options are checked against the plain table ``PRUNER_OPTIONS`` (no Optuna
import), so a bad option fails when the file is read, before any worker starts;
``pretrain`` values are typed by :mod:`dse_tune.typed_config`, as ``--config`` and ``--set`` are.

Example:
    >>> resources("space.yaml", {"resources": {"cpu": 2, "gpu": 0.5}})
    Resources(cpu=2.0, gpu=0.5, workers=1)
    >>> pruner("space.yaml", "pruner", {"type": "median", "n_warmup_steps": -1})
    Traceback (most recent call last):
    ...
    dse_tune.search_space.SearchSpaceError: space.yaml: pruner: median pruner refuses {'n_warmup_steps': -1}: n_warmup_steps must be an integer >= 0, got -1
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dse_tune import search_space_schema as schema
from dse_tune.arguments import is_int_at_least
from dse_tune.pretrain_config import PretrainConfig
from dse_tune.search_space_schema import Dimension, PrunerSpec, Resources, SearchSpaceError
from dse_tune.typed_config import ConfigValueError, describe_type, describe_value, field_types, suggest, typed_value, union_members

__all__ = [
    "pretrain",
    "pruner",
    "resources",
    "search",
    "selection",
    "storage",
    "sweep_name",
    "top_level",
]

TOP_LEVEL_KEYS = ("name", "pretrain", "search", "pruner", "resources", "storage", "selection")
SEARCH_KEYS = ("algorithm", "num_samples", "max_concurrent_trials", "seed")
RESOURCE_KEYS = ("cpu", "gpu", "workers", "cpus_per_worker", "gpus_per_worker")
STORAGE_KEYS = ("path", "checkpoints_to_keep", "max_failures")
SELECTION_KEYS = ("window", "top", "confirm_with", "label_images")


def pruner(where: str, label: str, value: Any) -> PrunerSpec | None:
    """The ``pruner`` section (``None`` or ``type: none``: no pruning)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, Mapping):
        raise SearchSpaceError(f"{where}: {label}: expected a mapping with 'type', got {describe_value(value)}")
    kind = value.get("type", "dse_degradation")
    if kind not in schema.PRUNER_TYPES:
        raise SearchSpaceError(f"{where}: {label}.type: must be one of {tuple(schema.PRUNER_TYPES)}, got {kind!r}")
    if schema.PRUNER_TYPES[kind] is None:
        _refuse_unknown(where, f"{label}.", value, ("type",))
        return None
    allowed = tuple(schema.PRUNER_OPTIONS[kind]) + ((schema.WRAPPED_KEY,) if kind == "patient" else ())
    options = {k: v for k, v in value.items() if k != "type"}
    _refuse_unknown(where, f"{label}.", options, allowed)
    wrapped = None
    if kind == "patient":
        wrapped = pruner(where, f"{label}.{schema.WRAPPED_KEY}", options.pop(schema.WRAPPED_KEY, None))
    reason = schema.check_pruner_options(kind, options)
    if reason is not None:
        raise SearchSpaceError(f"{where}: {label}: {kind} pruner refuses {options!r}: {reason}")
    return PrunerSpec(kind, options, wrapped)


def top_level(where: str, data: Any) -> Mapping[str, Any]:
    """The file's mapping of sections (an empty file is an empty mapping)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping of sections, got {describe_value(data)}")
    _refuse_unknown(where, "", data, TOP_LEVEL_KEYS)
    return data


def sweep_name(where: str, data: Mapping[str, Any]) -> str:
    """``name``: a folder name; default the file's stem."""
    name = data.get("name", Path(where).stem if where != schema.UNNAMED_SOURCE else "sweep")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SearchSpaceError(f"{where}: name: must be a folder name (letters, digits, '.', '_', '-'), got {name!r}")
    return name


def search(where: str, data: Mapping[str, Any], dimensions: Mapping[str, Dimension]) -> dict[str, Any]:
    """``search``: algorithm, num_samples, max_concurrent_trials, seed (as SweepSpec fields)."""
    section = _section(where, data, "search", SEARCH_KEYS)
    has_grid = any(d.kind == "grid" for d in dimensions.values())
    algorithm = section.get("algorithm", "random" if has_grid else "optuna")
    if algorithm not in schema.ALGORITHMS:
        raise SearchSpaceError(f"{where}: search.algorithm: must be one of {schema.ALGORITHMS}, got {algorithm!r}")
    if algorithm == "optuna" and has_grid:
        grids = sorted(n for n, d in dimensions.items() if d.kind == "grid")
        raise SearchSpaceError(
            f"{where}: search.algorithm: optuna cannot enumerate grid dimensions {grids} inside "
            "Ray Tune; use algorithm: random (grid x num_samples random draws) or choice instead of grid"
        )
    if algorithm == "optuna":
        for name, dimension in dimensions.items():
            for value in dimension.values:
                if value is not None and not isinstance(value, (bool, int, float, str)):
                    raise SearchSpaceError(
                        f"{where}: pretrain.{name}: optuna's categorical distribution needs "
                        f"scalar options, got {value!r}; use search.algorithm: random"
                    )
    integers = _integers(where, "search", section, num_samples=1, max_concurrent_trials=1, seed=0)
    if "seed" in integers:
        integers["sampler_seed"] = integers.pop("seed")
    return {"algorithm": algorithm, **integers}


def resources(where: str, data: Mapping[str, Any]) -> Resources:
    """``resources``: CPUs and GPUs per trial (``cpu``, ``gpu``), or per worker of a
    trial over several workers (``workers``, ``cpus_per_worker``, ``gpus_per_worker``)."""
    section = _section(where, data, "resources", RESOURCE_KEYS)
    workers = section.get("workers", 1)  # null is refused, not read as the default
    if not is_int_at_least(workers, 1):
        raise SearchSpaceError(f"{where}: resources.workers: must be an integer >= 1 (processes per trial), got {workers!r}")
    cpu = _per_worker(where, section, "cpu", "cpus_per_worker", 1)
    gpu = _per_worker(where, section, "gpu", "gpus_per_worker", 0)
    if cpu <= 0:
        raise SearchSpaceError(f"{where}: resources.cpu: must be > 0 (CPUs per trial), got {cpu!r}")
    if gpu < 0:
        raise SearchSpaceError(f"{where}: resources.gpu: must be >= 0 (GPUs per trial), got {gpu!r}")
    if gpu > 1 and gpu != int(gpu):
        raise SearchSpaceError(
            f"{where}: resources.gpu: a fraction shares one GPU, so it must be <= 1 or a whole number, got {gpu!r}"
        )
    if workers == 1 and gpu > 1:
        raise SearchSpaceError(
            f"{where}: resources.gpu: {gpu:g} GPUs in one process would train on one of them; "
            f"use workers: {int(gpu)}, gpus_per_worker: 1 (one DDP process per GPU, Ray Train)"
        )
    if workers > 1 and gpu != int(gpu):
        raise SearchSpaceError(f"{where}: resources.gpus_per_worker: DDP workers need whole GPUs, got {gpu!r}")
    return Resources(cpu=float(cpu), gpu=float(gpu), workers=int(workers))


def _per_worker(where: str, section: Mapping[str, Any], short: str, long: str, default: float) -> float:
    """``cpu``/``gpu`` and ``cpus_per_worker``/``gpus_per_worker`` name the same number."""
    if short in section and long in section:
        raise SearchSpaceError(f"{where}: resources: give {short} or {long}, not both (they are the same number)")
    key = long if long in section else short
    return _number(where, f"resources.{key}", section.get(key, default))


def storage(where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``storage``: path, max_failures (``checkpoints_to_keep`` is read and ignored, with a
    warning: the run folder keeps every checkpoint and Tune keeps none), as SweepSpec fields."""
    section = _section(where, data, "storage", STORAGE_KEYS)
    path = section.get("path", schema.DEFAULT_STORAGE_PATH)
    if not isinstance(path, str) or not path:
        raise SearchSpaceError(f"{where}: storage.path: must be a folder path, got {path!r}")
    if "://" in path:
        raise SearchSpaceError(
            f"{where}: storage.path: must be a local or shared (NFS) folder, got the URI {path!r}; "
            "the selector reads every trial's run folder from it"
        )
    if "checkpoints_to_keep" in section:
        warnings.warn(
            f"{where}: storage.checkpoints_to_keep is ignored and will be refused in the next release: "
            "Tune keeps no checkpoints; the run folder keeps every one",
            DeprecationWarning, stacklevel=2,
        )
    return {"storage_path": path, **_integers(where, "storage", section, max_failures=0)}


def selection(where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``selection``: window and top of the selector; ``confirm_with`` (a labelled folder
    for few-label confirmation, or null) and ``label_images`` (its label budget)."""
    section = _section(where, data, "selection", SELECTION_KEYS)
    confirm_with = section.get("confirm_with")
    if confirm_with is not None and (not isinstance(confirm_with, str) or not confirm_with):
        raise SearchSpaceError(f"{where}: selection.confirm_with: must be a folder path or null, got {confirm_with!r}")
    return {"confirm_with": confirm_with, **_integers(where, "selection", section, window=0, top=1, label_images=2)}


def pretrain(where: str, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Dimension]]:
    """``pretrain``: the fixed PretrainConfig fields and the searched ones."""
    declared = field_types(PretrainConfig)
    fixed: dict[str, Any] = {}
    dimensions: dict[str, Dimension] = {}
    for key, value in _section(where, data, "pretrain").items():
        label = f"pretrain.{key}"
        if key not in declared:
            raise SearchSpaceError(f"{where}: {label}: not a PretrainConfig field{suggest(str(key), declared)}")
        if _is_domain(value):
            dimensions[key] = _dimension(where, label, key, value, declared[key])
            continue
        if isinstance(value, Mapping) and "a mapping" not in describe_type(declared[key][0]):
            raise SearchSpaceError(
                f"{where}: {label}: a search domain is a mapping with one key out of "
                f"{schema.DOMAIN_KINDS}, got {dict(value)!r}"
            )
        fixed[key] = _typed(where, label, key, value, declared[key])

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


def _typed(where: str, label: str, name: str, value: Any, declared: tuple[Any, Any]) -> Any:
    """``value`` typed by the one typed config reader (lists stay lists, as in YAML; a
    field with its own parser, such as a probe image size, keeps the spelling given)."""
    try:
        typed = typed_value(name, value, *declared)
    except ConfigValueError as error:
        raise SearchSpaceError(f"{where}: {label}: {str(error).removeprefix(f'{name}: ')}") from None
    return value if declared[1] is not None else schema.plain(typed)


def _dimension(where: str, label: str, name: str, spec: Mapping[str, Any], declared: tuple[Any, Any]) -> Dimension:
    ((kind, arguments),) = spec.items()
    hint = declared[0]
    if kind in ("choice", "grid"):
        if not isinstance(arguments, (list, tuple)) or not arguments:
            raise SearchSpaceError(f"{where}: {label}: {kind} needs a non-empty list of options, got {arguments!r}")
        arguments = [_typed(where, f"{label} ({kind} option)", name, option, declared) for option in arguments]
        if len({repr(option) for option in arguments}) != len(arguments):
            raise SearchSpaceError(f"{where}: {label}: {kind} lists an option twice: {list(arguments)!r}")
        return Dimension(name, kind, values=tuple(arguments))

    if not isinstance(arguments, (list, tuple)) or len(arguments) != 2:
        raise SearchSpaceError(f"{where}: {label}: {kind} needs [low, high], got {arguments!r}")
    low, high = arguments
    for bound_name, bound in (("low", low), ("high", high)):
        _number(where, label, bound, f"{kind} {bound_name} must be a finite number")
    if kind == "randint":
        if not all(isinstance(b, numbers.Integral) for b in (low, high)):
            raise SearchSpaceError(f"{where}: {label}: randint needs integer bounds, got {list(arguments)!r}")
        if not _accepts(hint, int):
            raise SearchSpaceError(f"{where}: {label}: randint draws integers but {name} is {describe_type(hint)}")
    elif not _accepts(hint, float):
        raise SearchSpaceError(
            f"{where}: {label}: {kind} draws floats but {name} is {describe_type(hint)}; "
            "use randint or choice for integer fields"
        )
    if not low < high:
        raise SearchSpaceError(f"{where}: {label}: {kind} needs low < high, got {list(arguments)!r}")
    if kind == "loguniform" and low <= 0:
        raise SearchSpaceError(f"{where}: {label}: loguniform needs 0 < low, got {list(arguments)!r}")
    return Dimension(name, kind, low=low, high=high)


def _is_domain(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in schema.DOMAIN_KINDS


def _accepts(hint: Any, kind: type) -> bool:
    """Whether a field declared ``hint`` takes the numbers a range of ``kind`` draws."""
    return any(option is kind or (kind is int and option is float) for option in union_members(hint))


def _check_config(where: str, label: str, values: Mapping[str, Any]) -> None:
    try:
        PretrainConfig.from_dict(values).validate()
    except (TypeError, ValueError) as error:
        raise SearchSpaceError(f"{where}: {label}: not a valid pretraining setting: {error}") from None


def _section(where: str, data: Mapping[str, Any], key: str, known: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    """``data[key]``, a mapping (missing or null: empty) of ``known`` keys only (None: any)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SearchSpaceError(f"{where}: {key}: expected a mapping, got {describe_value(value)}")
    if known is not None:
        _refuse_unknown(where, f"{key}.", value, known)
    return value


def _refuse_unknown(where: str, prefix: str, section: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in section:
        if key not in known:
            raise SearchSpaceError(
                f"{where}: {prefix}{key}: unknown key{suggest(str(key), known)}; known keys: {', '.join(known)}"
            )


def _integers(where: str, name: str, section: Mapping[str, Any], **minimums: int) -> dict[str, int]:
    """The keys of ``minimums`` that the ``name`` section gives, each an integer >= its
    minimum; a key not given (or null) takes SweepSpec's default."""
    given = {key: section[key] for key in minimums if section.get(key) is not None}
    for key, value in given.items():
        reason = schema.integer_at_least(minimums[key])(value)
        if reason:
            raise SearchSpaceError(f"{where}: {name}.{key}: {reason}")
    return {key: int(value) for key, value in given.items()}


def _number(where: str, label: str, value: Any, wanted: str = "must be a number") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SearchSpaceError(f"{where}: {label}: {wanted}, got {value!r}")
    return float(value)
