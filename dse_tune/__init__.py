"""dse_tune: label-free model selection for self-supervised dense features.

The core (``dse_tune.metrics``, ``dse_tune.degradation``, ``dse_tune.selection``) is pure
torch/Python; framework adapters live in ``dse_tune.integrations``.
"""

from dse_tune.metrics import DSEResult, alpha_req, dse, lidar, rankme, standardize_dse

__version__ = "0.1.0"

__all__ = [
    "DSEResult",
    "DSERegularizer",
    "alpha_req",
    "dse",
    "lidar",
    "rankme",
    "standardize_dse",
]


def __getattr__(name):
    # The regularizer pulls in nn.Module machinery only; imported lazily to keep
    # `import dse_tune` light for the metric-only use.
    if name == "DSERegularizer":
        from dse_tune.regularizer import DSERegularizer

        return DSERegularizer
    raise AttributeError(f"module 'dse_tune' has no attribute {name!r}")
