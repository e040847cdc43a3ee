"""What a shared study stores so that other processes rebuild its objective and pruner.

:func:`~dse_tune.integrations.optuna.create_dse_study` keeps
``{"objective": objective_to_spec(...), "pruner": pruner_to_json(...)}`` in
``study.user_attrs["dse_tune"]``; a worker rebuilds both with :func:`objective_from_spec`
and :func:`pruner_from_json`. Plain JSON, so any Optuna storage holds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.pruners import BasePruner, NopPruner

from dse_tune.degradation import DegradationRule
from dse_tune.integrations.optuna.objective import DSEObjective
from dse_tune.integrations.optuna.pruner import DSEDegradationPruner
from dse_tune.integrations.optuna.space import SearchSpace

__all__ = [
    "objective_from_spec",
    "objective_to_spec",
    "pruner_from_json",
    "pruner_to_json",
    "search_space_from_json",
    "search_space_to_json",
]

_OBJECTIVE_FORMAT = 1


def objective_to_spec(objective: DSEObjective) -> dict[str, Any]:
    """A JSON-able description of ``objective`` that :func:`objective_from_spec` turns
    back into it in another process. ValueError for what another process cannot
    rebuild: a dataset object, Lightning callbacks, a search-space function defined in
    ``__main__`` or inside a function.

    Example:
        >>> objective = DSEObjective({"method": "dino"}, {"epochs": 3}, out_root="runs/study")
        >>> objective_from_spec(objective_to_spec(objective)).search_space
        {'epochs': 3}
    """
    if objective.data is not None and not isinstance(objective.data, (str, os.PathLike)):
        raise ValueError(f"data is a {type(objective.data).__name__} object, which other processes cannot "
                         "rebuild; pass a folder path (or 'synthetic')")
    if objective.callbacks:
        raise ValueError("Lightning callbacks cannot be shared with other processes; drop callbacks")
    spec = {
        "format": _OBJECTIVE_FORMAT,
        "base_config": objective.base_config.to_dict(),
        "search_space": search_space_to_json(objective.search_space),
        "out_root": str(objective.out_root),
        "data": None if objective.data is None else str(objective.data),
        "prune": objective.prune,
        "pretrain_kwargs": objective.pretrain_kwargs,
    }
    try:
        return json.loads(json.dumps(spec, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the objective cannot be stored as JSON: {error}") from None


def objective_from_spec(spec: Mapping[str, Any]) -> DSEObjective:
    """The objective described by :func:`objective_to_spec`."""
    if not isinstance(spec, Mapping) or spec.get("format") != _OBJECTIVE_FORMAT:
        raise ValueError(f"not a DSEObjective description (format {_OBJECTIVE_FORMAT}): {spec!r}")
    return DSEObjective(spec["base_config"], search_space_from_json(spec["search_space"]), spec["out_root"],
                        data=spec["data"], prune=spec["prune"], pretrain_kwargs=spec["pretrain_kwargs"])


def pruner_to_json(pruner: BasePruner) -> dict[str, Any]:
    """What a worker needs to rebuild ``pruner`` (see :func:`pruner_from_json`).

    Example:
        >>> pruner_from_json(pruner_to_json(DSEDegradationPruner(patience=2))).rule.patience
        2
    """
    if isinstance(pruner, DSEDegradationPruner):
        return {"kind": "dse_degradation", "rule": dataclasses.asdict(pruner.rule)}
    if isinstance(pruner, NopPruner):
        return {"kind": "none"}
    return {"kind": "other", "class": f"{type(pruner).__module__}.{type(pruner).__qualname__}"}


def pruner_from_json(description: Mapping[str, Any]) -> BasePruner | None:
    """The pruner :func:`pruner_to_json` described; None for one it cannot rebuild."""
    if description.get("kind") == "dse_degradation":
        return DSEDegradationPruner(DegradationRule(**description["rule"]))
    if description.get("kind") == "none":
        return NopPruner()
    return None


def search_space_to_json(search_space: SearchSpace) -> dict[str, Any]:
    """A JSON-able description of ``search_space`` for another process; ValueError for a
    function that another process cannot import (``__main__``, a lambda, a closure).

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> search_space_to_json({"lr": FloatDistribution(0.1, 1.0), "epochs": 3})["params"]["epochs"]
        {'value': 3}
        >>> search_space_from_json(search_space_to_json({"epochs": 3}))
        {'epochs': 3}
    """
    if isinstance(search_space, str):
        return {"kind": "import", "path": search_space}
    if isinstance(search_space, Mapping):
        params = {name: {"distribution": json.loads(distribution_to_json(spec))}
                  if isinstance(spec, BaseDistribution) else {"value": spec}
                  for name, spec in search_space.items()}
        return {"kind": "distributions", "params": params}
    module = getattr(search_space, "__module__", None)
    qualname = getattr(search_space, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise ValueError(f"the search-space function {qualname or search_space!r} cannot be imported by another "
                         "process (defined in __main__, or a lambda or nested function); move it to a module or use "
                         "a mapping of optuna distributions")
    return {"kind": "import", "path": f"{module}:{qualname}"}


def search_space_from_json(description: Mapping[str, Any]) -> SearchSpace:
    """The search space described by :func:`search_space_to_json`."""
    if description["kind"] == "import":
        return description["path"]
    return {name: json_to_distribution(json.dumps(entry["distribution"])) if "distribution" in entry
            else entry["value"] for name, entry in description["params"].items()}
