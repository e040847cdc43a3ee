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

__all__ = ["DRIVER_CPU", "param_space", "tune_domain", "tune_resources"]

#: What the Tune trial of a multi-worker trial (a driver that waits) holds.
DRIVER_CPU = 0.01
#: Search-space domain kind -> the ``ray.tune`` function that builds it.
_TUNE_DOMAINS = {"choice": "choice", "grid": "grid_search", "uniform": "uniform", "loguniform": "loguniform",
                 "randint": "randint"}


def tune_domain(dimension: Dimension) -> Any:
    """The Ray Tune domain of a dimension (``tune.choice``, ``tune.grid_search``, ...).

    ``randint`` keeps Ray's convention: ``high`` is excluded.
    """
    if dimension.kind not in _TUNE_DOMAINS:
        raise ValueError(f"dimension {dimension.name!r}: unknown kind {dimension.kind!r}")
    arguments = (list(dimension.values),) if dimension.kind in ("choice", "grid") else (dimension.low, dimension.high)
    return getattr(tune, _TUNE_DOMAINS[dimension.kind])(*arguments)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The Ray Tune param space of a sweep's searched fields."""
    return {name: tune_domain(dimension) for name, dimension in spec.dimensions.items()}


def tune_resources(resources: Resources) -> dict[str, float]:
    """Per-trial resources as ``tune.with_resources`` takes them.

    A trial over several workers is a driver that holds almost nothing (Tune refuses a
    trial without any resource): its ``TorchTrainer`` reserves the workers' CPUs and
    GPUs itself (Ray Train V2), so Tune must not hold them a second time
    (:mod:`~dse_tune.integrations.ray.distributed`); ``max_concurrent_trials`` bounds
    how many such runs compete for the cluster.

    Example:
        >>> from dse_tune.search_space import Resources
        >>> tune_resources(Resources(cpu=8, gpu=1, workers=4))
        {'cpu': 0.01, 'gpu': 0.0}
    """
    if resources.distributed:
        return {"cpu": DRIVER_CPU, "gpu": 0.0}
    return {"cpu": resources.cpu, "gpu": resources.gpu}
