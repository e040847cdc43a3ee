"""Run-level standardisation of DSE over a run's checkpoints.

As the public code, over a run's checkpoints (docs/metric.md)::

    standardized_t = R_t / std(R) + lam * M_dim_t / std(M_dim),
    R_t = M_inter_t - (M_intra_image_t + M_intra_batch_t) / 2

with ``raw_t = R_t + lam * M_dim_t`` beside it; a term whose std is zero is left unscaled.
The formula itself is :func:`dse_tune.decision.standardized_series` (one place).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dse_tune.decision import standardized_series
from dse_tune.metrics.dse_metric import COMPONENTS, DSEResult


@dataclass(frozen=True)
class StandardizedDSE:
    """Raw and standardised DSE series of one run, with the scales used."""

    raw: list[float]
    standardized: list[float]
    class_relevance_std: float
    dim_std: float
    lam: float


def _component_array(history: object, name: str) -> np.ndarray:
    if isinstance(history, Mapping):
        if name not in history:
            raise KeyError(f"history has no component {name!r} (expected keys {COMPONENTS})")
        return np.asarray(history[name], dtype=np.float64)
    values = []
    for position, entry in enumerate(history):
        if isinstance(entry, DSEResult):
            values.append(getattr(entry, name))
        elif isinstance(entry, Mapping):
            if name not in entry:
                raise KeyError(f"history[{position}] has no component {name!r}")
            values.append(entry[name])
        else:
            raise TypeError(
                f"history[{position}] must be a DSEResult or a mapping of components, got {type(entry).__name__}"
            )
    return np.asarray(values, dtype=np.float64)


def standardize_dse(history: Sequence | Mapping, lam: float = 1.0) -> StandardizedDSE:
    """Standardise a run's DSE series (one entry per checkpoint, in training order).

    Args:
        history: a sequence of ``DSEResult`` or of mappings with the keys ``inter``,
            ``intra_image``, ``intra_batch``, ``dim``; or one mapping of those keys to
            equal-length sequences.
        lam: weight of the dimensionality term after standardisation.
    """
    if not math.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam}")
    components = {name: _component_array(history, name) for name in COMPONENTS}
    lengths = {name: len(values) for name, values in components.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"component histories differ in length: {lengths}")
    if lengths["inter"] == 0:
        raise ValueError("history is empty: standardisation needs at least one checkpoint")
    for name, values in components.items():
        if not np.isfinite(values).all():
            raise ValueError(f"history component {name!r} holds {int((~np.isfinite(values)).sum())} non-finite value(s)")
    relevance = components["inter"] - (components["intra_image"] + components["intra_batch"]) / 2
    dim = components["dim"]
    return StandardizedDSE(
        raw=(relevance + lam * dim).tolist(),
        standardized=standardized_series(relevance.tolist(), dim.tolist(), lam),
        class_relevance_std=float(relevance.std()),
        dim_std=float(dim.std()),
        lam=lam,
    )
