"""Lightning adapter: score DSE during training, keep its history, stop on degradation.

:class:`DSEMonitor`, a callback over :class:`dse_tune.tracker.DSETracker`, is defined in
:mod:`dse_tune.ssl.monitor` because the pretraining (ssl/, below the integrations) uses it.
"""

from dse_tune.ssl.monitor import DSEMonitor

__all__ = ["DSEMonitor"]
