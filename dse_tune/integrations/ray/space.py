"""Search spaces on the Ray side: plain search-space data into Ray Tune objects.

:mod:`dse_tune.search_space` parses a YAML search space into plain data (it imports no
Ray); these functions translate it for a :class:`ray.tune.Tuner`.

Example:
    >>> from dse_tune.search_space import parse_search_space
    >>> spec = parse_search_space({"pretrain": {"dse_beta": {"grid": [0.0, 0.1]},
    ...                                         "warmup_epochs": {"randint": [1, 4]}}})
    >>> space = param_space(spec)
    >>> space["dse_beta"]
    {'grid_search': [0.0, 0.1]}
    >>> space["warmup_epochs"].lower, space["warmup_epochs"].upper
    (1, 4)
    >>> tune_resources(spec.resources)
    {'cpu': 1.0, 'gpu': 0.0}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray import tune

if TYPE_CHECKING:
    from dse_tune.search_space import Dimension, Resources, SweepSpec

__all__ = ["param_space", "tune_domain", "tune_resources"]


def tune_domain(dimension: Dimension) -> Any:
    """The Ray Tune domain of a dimension (``tune.choice``, ``tune.grid_search``, ...).

    ``randint`` keeps Ray's convention: ``high`` is excluded.
    """
    if dimension.kind == "choice":
        return tune.choice(list(dimension.values))
    if dimension.kind == "grid":
        return tune.grid_search(list(dimension.values))
    if dimension.kind == "uniform":
        return tune.uniform(dimension.low, dimension.high)
    if dimension.kind == "loguniform":
        return tune.loguniform(dimension.low, dimension.high)
    if dimension.kind == "randint":
        return tune.randint(dimension.low, dimension.high)
    raise ValueError(f"dimension {dimension.name!r}: unknown kind {dimension.kind!r}")


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The Ray Tune param space of a sweep's searched fields."""
    return {name: tune_domain(dimension) for name, dimension in spec.dimensions.items()}


def tune_resources(resources: Resources) -> dict[str, float]:
    """Per-trial resources as ``tune.with_resources`` takes them."""
    return {"cpu": resources.cpu, "gpu": resources.gpu}
