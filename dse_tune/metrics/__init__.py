"""Label-free scores of dense features: DSE and image-level baselines. Pure torch."""

from dse_tune.metrics.baselines import AlphaReQResult, alpha_req, lidar, rankme
from dse_tune.metrics.dse_metric import DSEResult, dse
from dse_tune.metrics.standardize import StandardizedDSE, standardize_dse
from dse_tune.metrics.tolerant import TokenScore, score_tokens

__all__ = [
    "AlphaReQResult",
    "DSEResult",
    "StandardizedDSE",
    "TokenScore",
    "alpha_req",
    "dse",
    "lidar",
    "rankme",
    "score_tokens",
    "standardize_dse",
]
