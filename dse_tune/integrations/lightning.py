"""Lightning adapter: score DSE during training, keep its history, stop on degradation.

:class:`DSEMonitor` is a ``lightning.pytorch`` callback over the framework-free
:class:`dse_tune.tracker.DSETracker`, for any Lightning training loop. It is defined in
:mod:`dse_tune.ssl.monitor`, next to the pretraining that trains with it: ssl/ sits below
the integrations, so it cannot import from here.
"""

from dse_tune.ssl.monitor import DSEMonitor

__all__ = ["DSEMonitor"]
