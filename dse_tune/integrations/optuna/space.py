"""Search spaces on the Optuna side.

Two translations: a sweep's plain search-space data (:mod:`dse_tune.search_space`, which
imports no Optuna) into Optuna distributions and pruners; an objective's
:data:`SearchSpace` into a trial's config overrides (:func:`suggest_params`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import BasePruner
from optuna.trial import Trial

if TYPE_CHECKING:
    from dse_tune.search_space import Dimension, PrunerSpec, SweepSpec

__all__ = [
    "SearchSpace",
    "build_pruner",
    "check_search_space",
    "optuna_distribution",
    "optuna_distributions",
    "optuna_grid",
    "suggest_params",
]

#: A search space: ``{config field: optuna distribution or fixed value}``, a function
#: ``trial -> {config field: value}`` (calling ``trial.suggest_*``), or the import path
#: ``"package.module:function"`` of such a function.
SearchSpace = Mapping[str, Any] | Callable[[Trial], Mapping[str, Any]] | str

_SEARCH_SPACE_KINDS = ("search_space must be a mapping {field: distribution or value}, a function trial -> "
                       "mapping, or 'module:function'")


# ------------------------------------------------------------ sweep spec -> Optuna


def optuna_distribution(dimension: Dimension) -> BaseDistribution:
    """The Optuna distribution of a search-space dimension (``grid``: a categorical one).

    Example:
        >>> from dse_tune.search_space import Dimension
        >>> optuna_distribution(Dimension("warmup_epochs", "randint", low=1, high=4))
        IntDistribution(high=3, log=False, low=1, step=1)
    """
    if dimension.kind in ("choice", "grid"):
        return CategoricalDistribution(list(dimension.values))
    if dimension.kind in ("uniform", "loguniform"):
        return FloatDistribution(float(dimension.low), float(dimension.high), log=dimension.kind == "loguniform")
    if dimension.kind == "randint":
        return IntDistribution(int(dimension.low), int(dimension.high) - 1)  # high excluded
    raise ValueError(f"dimension {dimension.name!r}: unknown kind {dimension.kind!r}")


def optuna_distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """Optuna distributions of a sweep's searched fields, for ``study.ask(...)`` or a
    :class:`~dse_tune.integrations.optuna.DSEObjective`; ``grid`` dimensions become
    categorical ones (enumerate them with :func:`optuna_grid` and ``GridSampler``)."""
    return {name: optuna_distribution(dimension) for name, dimension in spec.dimensions.items()}


def optuna_grid(spec: SweepSpec) -> dict[str, list[Any]]:
    """``optuna.samplers.GridSampler`` search space of the sweep's ``grid`` dimensions."""
    return {name: list(d.values) for name, d in spec.dimensions.items() if d.kind == "grid"}


def build_pruner(pruner: PrunerSpec | None) -> BasePruner | None:
    """The Optuna pruner a pruner spec names, or None for none (``type: none``).

    Example:
        >>> from dse_tune.search_space import PrunerSpec
        >>> build_pruner(PrunerSpec("dse_degradation", {"warmup": 3})).rule.warmup
        3
        >>> build_pruner(None) is None
        True
    """
    if pruner is None:
        return None
    from dse_tune.search_space import PRUNER_TYPES

    target = PRUNER_TYPES[pruner.type]
    if target is None:
        return None
    pruner_class = getattr(importlib.import_module(target[0]), target[1])
    options = dict(pruner.options)
    if pruner.type == "patient":
        options["wrapped_pruner"] = build_pruner(pruner.wrapped)
    with warnings.catch_warnings():
        # Optuna flags PatientPruner & co. as experimental; the spec chose them.
        warnings.filterwarnings("ignore", message=".*experimental.*")
        return pruner_class(**options)


# ------------------------------------------------------- an objective's search space


def suggest_params(trial: Trial, search_space: SearchSpace) -> dict[str, Any]:
    """Sample the config overrides of ``trial`` from ``search_space`` (see :data:`SearchSpace`).

    Distributions are sampled with the matching ``trial.suggest_*`` call, so they appear
    in ``trial.params``; other values of a mapping are fixed overrides.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(direction="maximize")
        >>> space = {"lr": FloatDistribution(1e-4, 1e-3, log=True),
        ...          "dse_beta": CategoricalDistribution([0.0, 0.1]), "epochs": 20}
        >>> params = suggest_params(study.ask(), space)
        >>> sorted(params), params["epochs"]
        (['dse_beta', 'epochs', 'lr'], 20)
    """
    if isinstance(search_space, str):
        search_space = _import_object(search_space, "search_space")
    if isinstance(search_space, Mapping):
        return {name: _suggest(trial, name, spec) if isinstance(spec, BaseDistribution) else spec
                for name, spec in search_space.items()}
    if callable(search_space):
        params = search_space(trial)
        if not isinstance(params, Mapping):
            raise TypeError(f"the search-space function must return a mapping of config fields, "
                            f"got {type(params).__name__}")
        return dict(params)
    raise TypeError(f"{_SEARCH_SPACE_KINDS}, got {type(search_space).__name__}")


def _suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        suggest = trial.suggest_float if isinstance(distribution, FloatDistribution) else trial.suggest_int
        return suggest(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"search_space[{name!r}]: unsupported distribution {type(distribution).__name__}; use "
                    "FloatDistribution, IntDistribution or CategoricalDistribution")


def check_search_space(search_space: SearchSpace) -> SearchSpace:
    """``search_space``, checked: a mapping may name only ``PretrainConfig`` fields."""
    from dse_tune.pretrain_config import PretrainConfig
    from dse_tune.typed_config import field_types, suggest

    if isinstance(search_space, str):
        if ":" not in search_space:
            raise ValueError(f"search_space {search_space!r}: expected 'package.module:function'")
        return search_space
    if isinstance(search_space, Mapping):
        fields = field_types(PretrainConfig)
        unknown = sorted(set(search_space) - set(fields))
        if unknown:
            raise ValueError(f"search_space: unknown PretrainConfig field(s) {unknown}{suggest(unknown[0], fields)}")
        return dict(search_space)
    if callable(search_space):
        return search_space
    raise TypeError(f"{_SEARCH_SPACE_KINDS}, got {type(search_space).__name__}")


def _import_object(path: str, what: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what} {path!r}: expected 'package.module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{what} {path!r} cannot be imported: {error}") from None
    return target
