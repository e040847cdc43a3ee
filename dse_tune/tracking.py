"""Deprecated alias of :mod:`dse_tune.checkpoint_tracking` (renamed so that it is not
mistaken for :mod:`dse_tune.tracker`); it goes away in the next release."""

import warnings

from dse_tune.checkpoint_tracking import *  # noqa: F401,F403
from dse_tune.checkpoint_tracking import __all__  # noqa: F401

warnings.warn(
    "dse_tune.tracking is renamed dse_tune.checkpoint_tracking; the old name goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)
