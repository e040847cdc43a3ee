"""How each section of a search space file is read and checked.

:func:`dse_tune.search_space.parse_search_space` calls one function per section; each
returns plain values (or :mod:`dse_tune.search_space` classes) and raises
:class:`~dse_tune.search_space.SearchSpaceError` naming the file, the key and the
reason. Nothing here imports Ray or Optuna: pruner options are checked against the plain
table :data:`dse_tune.search_space.PRUNER_OPTIONS`, so a bad option fails when the file
is read, before any worker starts.

Example:
    >>> resources("space.yaml", {"resources": {"cpu": 2, "gpu": 0.5}})
    Resources(cpu=2.0, gpu=0.5, workers=1)
    >>> pruner("space.yaml", "pruner", {"type": "median", "n_warmup_steps": -1})
    Traceback (most recent call last):
    ...
    dse_tune.search_space.SearchSpaceError: space.yaml: pruner: median pruner refuses {'n_warmup_steps': -1}: n_warmup_steps must be an integer >= 0, got -1
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dse_tune.search_space import (
    ALGORITHMS,
    DEFAULT_STORAGE_PATH,
    DOMAIN_KINDS,
    PRUNER_TYPES,
    PRUNER_OPTIONS,
    UNNAMED_SOURCE,
    WRAPPED_KEY,
    Dimension,
    PrunerSpec,
    Resources,
    SearchSpaceError,
    check_pruner_options,
)
from dse_tune.ssl.config import PretrainConfig

__all__ = [
    "pretrain",
    "pruner",
    "read_yaml",
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
        raise SearchSpaceError(f"{where}: {label}: expected a mapping with 'type', got {_kind(value)}")
    kind = value.get("type", "dse_degradation")
    if kind not in PRUNER_TYPES:
        raise SearchSpaceError(f"{where}: {label}.type: must be one of {tuple(PRUNER_TYPES)}, got {kind!r}")
    if PRUNER_TYPES[kind] is None:
        _refuse_unknown(where, f"{label}.", value, ("type",))
        return None
    allowed = tuple(PRUNER_OPTIONS[kind]) + ((WRAPPED_KEY,) if kind == "patient" else ())
    options = {k: v for k, v in value.items() if k != "type"}
    _refuse_unknown(where, f"{label}.", options, allowed)
    wrapped = None
    if kind == "patient":
        wrapped = pruner(where, f"{label}.{WRAPPED_KEY}", options.pop(WRAPPED_KEY, None))
    reason = check_pruner_options(kind, options)
    if reason is not None:
        raise SearchSpaceError(f"{where}: {label}: {kind} pruner refuses {options!r}: {reason}")
    return PrunerSpec(kind, options, wrapped)


# --------------------------------------------------------------------------- sections


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


def read_yaml(path: Path) -> Any:
    """The YAML content of ``path``; errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SearchSpaceError(f"{path}: cannot read the search space: {error.strerror or error}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise SearchSpaceError(f"{path}: not valid YAML: {error}") from None


def top_level(where: str, data: Any) -> Mapping[str, Any]:
    """The file's mapping of sections (an empty file is an empty mapping)."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping of sections, got {_kind(data)}")
    _refuse_unknown(where, "", data, TOP_LEVEL_KEYS)
    return data


def sweep_name(where: str, data: Mapping[str, Any]) -> str:
    """``name``: a folder name; default the file's stem."""
    name = data.get("name", Path(where).stem if where != UNNAMED_SOURCE else "sweep")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise SearchSpaceError(
            f"{where}: name: must be a folder name (letters, digits, '.', '_', '-'), got {name!r}"
        )
    return name


def search(where: str, data: Mapping[str, Any], dimensions: Mapping[str, Dimension]) -> dict[str, Any]:
    """``search``: algorithm, num_samples, max_concurrent_trials, seed."""
    section = _section(where, data, "search")
    _refuse_unknown(where, "search.", section, SEARCH_KEYS)
    has_grid = any(d.kind == "grid" for d in dimensions.values())
    algorithm = section.get("algorithm", "random" if has_grid else "optuna")
    if algorithm not in ALGORITHMS:
        raise SearchSpaceError(f"{where}: search.algorithm: must be one of {ALGORITHMS}, got {algorithm!r}")
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
    concurrent, seed = section.get("max_concurrent_trials"), section.get("seed")
    return {
        "algorithm": algorithm,
        "num_samples": _integer(where, "search.num_samples", section.get("num_samples", 1), minimum=1),
        "max_concurrent_trials": None
        if concurrent is None
        else _integer(where, "search.max_concurrent_trials", concurrent, minimum=1),
        "seed": None if seed is None else _integer(where, "search.seed", seed, minimum=0),
    }


def resources(where: str, data: Mapping[str, Any]) -> Resources:
    """``resources``: CPUs and GPUs per trial (``cpu``, ``gpu``), or per worker of a
    trial over several workers (``workers``, ``cpus_per_worker``, ``gpus_per_worker``)."""
    section = _section(where, data, "resources")
    _refuse_unknown(where, "resources.", section, RESOURCE_KEYS)
    workers = section.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
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
        raise SearchSpaceError(
            f"{where}: resources.gpus_per_worker: DDP workers need whole GPUs, got {gpu!r}"
        )
    return Resources(cpu=float(cpu), gpu=float(gpu), workers=int(workers))


def _per_worker(where: str, section: Mapping[str, Any], short: str, long: str, default: float) -> float:
    """``cpu``/``gpu`` and ``cpus_per_worker``/``gpus_per_worker`` name the same number."""
    if short in section and long in section:
        raise SearchSpaceError(f"{where}: resources: give {short} or {long}, not both (they are the same number)")
    key = long if long in section else short
    return _number(where, f"resources.{key}", section.get(key, default))


def storage(where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``storage``: path, checkpoints_to_keep, max_failures."""
    section = _section(where, data, "storage")
    _refuse_unknown(where, "storage.", section, STORAGE_KEYS)
    path = section.get("path", DEFAULT_STORAGE_PATH)
    if not isinstance(path, str) or not path:
        raise SearchSpaceError(f"{where}: storage.path: must be a folder path, got {path!r}")
    if "://" in path:
        raise SearchSpaceError(
            f"{where}: storage.path: must be a local or shared (NFS) folder, got the URI {path!r}; "
            "the selector reads every trial's run folder from it"
        )
    return {
        "path": path,
        "checkpoints_to_keep": _integer(
            where, "storage.checkpoints_to_keep", section.get("checkpoints_to_keep", 3), minimum=1
        ),
        "max_failures": _integer(where, "storage.max_failures", section.get("max_failures", 1), minimum=0),
    }


def selection(where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``selection``: window and top of the selector; ``confirm_with`` (a labelled folder
    for few-label confirmation, or null) and ``label_images`` (its label budget)."""
    section = _section(where, data, "selection")
    _refuse_unknown(where, "selection.", section, SELECTION_KEYS)
    confirm_with = section.get("confirm_with")
    if confirm_with is not None and (not isinstance(confirm_with, str) or not confirm_with):
        raise SearchSpaceError(f"{where}: selection.confirm_with: must be a folder path or null, got {confirm_with!r}")
    return {
        "window": _integer(where, "selection.window", section.get("window", 2), minimum=0),
        "top": _integer(where, "selection.top", section.get("top", 3), minimum=1),
        "confirm_with": confirm_with,
        "label_images": _integer(where, "selection.label_images", section.get("label_images", 32), minimum=2),
    }


def pretrain(where: str, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Dimension]]:
    """``pretrain``: the fixed PretrainConfig fields and the searched ones."""
    hints = _field_hints()
    fixed: dict[str, Any] = {}
    dimensions: dict[str, Dimension] = {}
    for key, value in _section(where, data, "pretrain").items():
        label = f"pretrain.{key}"
        if key not in hints:
            raise SearchSpaceError(f"{where}: {label}: not a PretrainConfig field{_suggest(str(key), hints)}")
        hint = hints[key]
        if _is_domain(value):
            dimensions[key] = _dimension(where, label, key, value, hint)
            continue
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


def _dimension(where: str, label: str, name: str, spec: Mapping[str, Any], hint: Any) -> Dimension:
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


# --------------------------------------------------------------------------- type checks


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


def _conforms_scalar(value: Any, option: Any) -> bool:
    if option is Any or (option is type(None) and value is None):
        return True
    if option is bool:
        return isinstance(value, bool)
    if option in (int, float) and isinstance(value, bool):
        return False
    if option is int:
        return isinstance(value, numbers.Integral)
    if option is float:
        return isinstance(value, numbers.Real)
    return option is str and isinstance(value, str)


def _conforms(value: Any, hint: Any) -> bool:
    for option in _options(hint):
        origin = typing.get_origin(option)
        if _conforms_scalar(value, option):
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
