"""Label-free scores of dense features: DSE and image-level baselines. Pure torch."""

from dse_tune.metrics.baselines import AlphaReQResult, alpha_req, lidar, rankme
from dse_tune.metrics.dse_metric import DSEResult, dse
from dse_tune.metrics.standardize import StandardizedDSE, standardize_dse

__all__ = [
    "AlphaReQResult",
    "DSEResult",
    "StandardizedDSE",
    "alpha_req",
    "dse",
    "lidar",
    "rankme",
    "standardize_dse",
]
