"""dse_tune: label-free model selection for self-supervised dense features.

The core imports no Lightning, Ray or Optuna; framework adapters live in
``dse_tune.integrations``, the command line in ``dse_tune.cli`` (docs/architecture.md).
Names are loaded on first use, so ``import dse_tune.runs`` stays free of torch.

Example:
    >>> import torch, dse_tune
    >>> result = dse_tune.dse(torch.randn(16, 16, 8), seed=0)
    >>> [name for name in ("score", "inter", "intra_image", "intra_batch", "dim") if name in result.as_dict()]
    ['score', 'inter', 'intra_image', 'intra_batch', 'dim']
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that owns it
_EXPORTS = {
    "DSEResult": "dse_tune.metrics",
    "TokenScore": "dse_tune.metrics",
    "alpha_req": "dse_tune.metrics",
    "dse": "dse_tune.metrics",
    "lidar": "dse_tune.metrics",
    "rankme": "dse_tune.metrics",
    "score_tokens": "dse_tune.metrics",
    "standardize_dse": "dse_tune.metrics",
    "DSERegularizer": "dse_tune.regularizer",
    "DegradationRule": "dse_tune.degradation",
    "peak": "dse_tune.degradation",
    "RunRecord": "dse_tune.runs",
    "read_run": "dse_tune.runs",
    "select_best": "dse_tune.selection",
    "DSETracker": "dse_tune.tracker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dse_tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
