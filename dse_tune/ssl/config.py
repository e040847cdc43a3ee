"""PretrainConfig, under its older address: it lives in the core, :mod:`dse_tune.pretrain_config`
(search spaces check their fields against it, and the core never imports ``ssl/``)."""

from dse_tune.pretrain_config import METHODS, PRECISIONS, VIT_ONLY_METHODS, PretrainConfig

__all__ = ["METHODS", "PRECISIONS", "VIT_ONLY_METHODS", "PretrainConfig"]
