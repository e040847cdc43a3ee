"""THE typed config reader: YAML files, ``--set FIELD=VALUE`` and search spaces.

Every value is typed from its field's declaration (a dataclass's annotations, e.g.
:class:`~dse_tune.pretrain_config.PretrainConfig`) here, so that the three ways of giving
a setting agree. YAML is read with ``1e-4`` a number (YAML 1.1, and so ``yaml.safe_load``,
reads it as text); ints become floats where a float is declared, lists become tuples; a
bad value is refused with a :class:`ConfigValueError` naming the field, the value and the
type wanted (a number is never silently text). A field may declare its own parser in its
metadata (``field(metadata={PARSE: fn})``), e.g. :func:`parse_image_size`.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Settings:
    ...     lr: float = 0.1
    ...     scale: tuple[float, float] = (0.4, 1.0)
    >>> typed_fields(Settings, load_yaml("lr: 1E-4\\nscale: [0, 1]"))
    {'lr': 0.0001, 'scale': (0.0, 1.0)}
    >>> typed_fields(Settings, {"lr": "fast"})
    Traceback (most recent call last):
    ...
    dse_tune.typed_config.ConfigValueError: lr: expected a number, got 'fast' (a string)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "NATIVE",
    "PARSE",
    "ConfigValueError",
    "describe_type",
    "describe_value",
    "field_types",
    "load_yaml",
    "parse_assignment",
    "parse_image_size",
    "read_config_file",
    "read_yaml",
    "recorded_image_size",
    "typed_fields",
    "typed_value",
    "union_members",
]

#: Field metadata key of a field's own parser (``value -> typed value``, ValueError if bad).
PARSE = "parse"
#: The probe image size "each image at its own size" (see :func:`dse_tune.data.build_probe_set`).
NATIVE = "native"


class ConfigValueError(ValueError):
    """A setting cannot be used; the message names the field, the value and the type wanted."""


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


def load_yaml(text: str) -> Any:
    """YAML text -> Python values, ``1e-4`` a float (``yaml.YAMLError`` if malformed)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | Path, error: type[Exception] = ConfigValueError) -> Any:
    """The content of a YAML (or JSON) file; failures raise ``error`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as failure:
        raise error(f"{path}: cannot read it: {failure.strerror or failure}") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
    except (yaml.YAMLError, ValueError) as failure:
        raise error(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {failure}") from None


def read_config_file(path: str | Path, config_class: type) -> dict[str, Any]:
    """The typed fields a YAML/JSON file sets for ``config_class``; errors name the file
    and the key (``config.yaml: lr: expected a number, got 'fast' (a string)``)."""
    values = read_yaml(path)
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigValueError(f"{path}: must hold a mapping of field: value, got {describe_value(values)}")
    try:
        return typed_fields(config_class, values)
    except ConfigValueError as failure:
        raise ConfigValueError(f"{path}: {failure}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"FIELD=VALUE"`` -> ``(FIELD, VALUE read as YAML)`` (``1e-4`` a float).

    Example:
        >>> parse_assignment("lr=1e-4"), parse_assignment("splits=[train, val]")
        (('lr', 0.0001), ('splits', ['train', 'val']))
    """
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise ConfigValueError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return name.strip(), load_yaml(value)
    except yaml.YAMLError as failure:
        raise ConfigValueError(f"{name.strip()}: {value!r} is not a YAML value: {failure}") from None


def field_types(config_class: type) -> dict[str, tuple[Any, Callable[[Any], Any] | None]]:
    """``name -> (declared type, own parser or None)`` for every field of a dataclass."""
    hints = typing.get_type_hints(config_class)
    return {f.name: (hints[f.name], f.metadata.get(PARSE)) for f in dataclasses.fields(config_class)}


def typed_fields(config_class: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of ``values`` typed as its ``config_class`` field declares; a name
    that is not a field is refused, with the closest field suggested."""
    types_ = field_types(config_class)
    unknown = [name for name in values if name not in types_]
    if unknown:
        raise ConfigValueError(
            f"unknown {config_class.__name__} field(s) {unknown}{suggest(str(unknown[0]), types_)}"
        )
    return {name: typed_value(name, value, *types_[name]) for name, value in values.items()}


def typed_value(name: str, value: Any, hint: Any, parse: Callable[[Any], Any] | None = None) -> Any:
    """``value`` as the declared type ``hint`` (or the field's own ``parse``) wants it.

    Exact matches win (``devices: 2`` stays an int for ``int | str``); then the lenient
    reading: a numeric string for a number (``"1e-4"`` from a ``yaml.safe_load``).
    """
    if parse is not None and value is not None:
        try:
            return parse(value)
        except (TypeError, ValueError) as failure:
            raise ConfigValueError(f"{name}: {failure}") from None
    for lenient in (False, True):
        for option in union_members(hint):
            converted = _convert(value, option, lenient)
            if converted is not _REFUSED:
                return converted
    raise ConfigValueError(f"{name}: expected {describe_type(hint)}, got {value!r} ({describe_value(value)})")


_REFUSED = object()
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _convert(value: Any, option: Any, lenient: bool) -> Any:
    """``value`` as ``option`` (one member of a union), or ``_REFUSED``."""
    origin = typing.get_origin(option)
    if option is Any:
        return value
    if option is type(None):
        return None if value is None else _REFUSED
    if option is bool:
        return value if isinstance(value, bool) else _REFUSED
    if option in (int, float):
        return _number(value, option, lenient)
    if option is str:
        return value if isinstance(value, str) else _REFUSED
    if origin is dict or option is dict:
        return dict(value) if isinstance(value, Mapping) and all(isinstance(k, str) for k in value) else _REFUSED
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        return _sequence(value, option, lenient)
    return _REFUSED


def _number(value: Any, kind: type, lenient: bool) -> Any:
    if isinstance(value, bool):
        return _REFUSED
    if lenient and isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value) if kind is float or not value.strip().lstrip("+-").isdigit() else int(value)
    if kind is int:
        return int(value) if isinstance(value, numbers.Integral) else _REFUSED
    return float(value) if isinstance(value, numbers.Real) else _REFUSED


def _sequence(value: Any, option: Any, lenient: bool) -> Any:
    arguments = typing.get_args(option)
    if typing.get_origin(option) is list or (len(arguments) == 2 and arguments[1] is Ellipsis):
        items = [arguments[0] if arguments else Any] * len(value)
    elif len(arguments) == len(value):
        items = list(arguments)
    else:
        return _REFUSED
    converted = [_convert(item, hint, lenient) for item, hint in zip(value, items)]
    if any(item is _REFUSED for item in converted):
        return _REFUSED
    return list(converted) if typing.get_origin(option) is list else tuple(converted)


def union_members(hint: Any) -> tuple[Any, ...]:
    """The members of a union type (``float | None`` -> ``(float, NoneType)``), else ``(hint,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def describe_type(hint: Any) -> str:
    """A declared type in words: ``float | None`` -> ``'a number or null'``.

    Example:
        >>> describe_type(float), describe_type(tuple[float, float]), describe_type(int | str | list[int])
        ('a number', 'a list of 2 numbers', 'an integer or a string or a list of integers')
    """
    words = []
    for option in union_members(hint):
        origin, arguments = typing.get_origin(option), typing.get_args(option)
        if origin in (tuple, list) and arguments and (origin is list or arguments[-1] is Ellipsis):
            words.append(f"a list of {_plural(describe_type(arguments[0]))}")
        elif origin is tuple and arguments:
            words.append(f"a list of {len(arguments)} {_plural(describe_type(arguments[0]))}")
        else:
            words.append(_TYPE_WORDS.get(origin or option, getattr(option, "__name__", str(option))))
    return " or ".join(words)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null",
               dict: "a mapping", list: "a list", tuple: "a list", Any: "any value"}


def _plural(words: str) -> str:
    return words.split(" ", 1)[-1] + "s" if words.startswith(("a ", "an ")) else words


def describe_value(value: Any) -> str:
    """What kind of value was given, in words (``'a mapping'``, ``'null'``, ``'int'``)."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def suggest(key: str, known: Any) -> str:
    """`` (did you mean 'lr'?)`` for a near-miss of a known name, else ``''``."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_image_size(value: Any) -> tuple[int, int] | str:
    """``(H, W)`` or ``"native"`` from any spelling of a probe image size: ``N`` (a
    square, as every older config and run folder says), ``"HxW"``, ``[H, W]``, ``"native"``.

    Example:
        >>> parse_image_size(32), parse_image_size("96x128"), parse_image_size([96, 128]), parse_image_size("native")
        ((32, 32), (96, 128), (96, 128), 'native')
        >>> parse_image_size("96x")
        Traceback (most recent call last):
        ValueError: image size '96x' is not N, HxW (e.g. 96x128) or 'native'
    """
    if isinstance(value, str) and value.strip().lower() == NATIVE:
        return NATIVE
    if isinstance(value, str):
        parts: list[Any] = value.strip().lower().replace("×", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    sides = [int(part) for part in parts if not isinstance(part, bool) and isinstance(part, (int, str))
             and str(part).strip().isdigit()]
    if len(parts) not in (1, 2) or len(sides) != len(parts):
        raise ValueError(f"image size {value!r} is not N, HxW (e.g. 96x128) or {NATIVE!r}")
    if min(sides) < 1:
        raise ValueError(f"image size {value!r} must be positive")
    return (sides[0], sides[-1])


def image_size_key(size: int | tuple[int, int] | str) -> str:
    """The text reports key a probe size by: ``"32"`` for a square (as every older report
    says), ``"96x128"``, ``"native"``.

    Example:
        >>> image_size_key((32, 32)), image_size_key(32), image_size_key((96, 128)), image_size_key("native")
        ('32', '32', '96x128', 'native')
    """
    if isinstance(size, (str, int)):
        return str(size)
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def recorded_image_size(value: Any) -> list[int] | str:
    """How ``config.json`` records a probe image size: ``[H, W]`` or ``"native"``."""
    size = parse_image_size(value)
    return size if size == NATIVE else list(size)
