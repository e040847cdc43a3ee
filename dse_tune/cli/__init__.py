"""The ``dse-tune`` command line: :func:`main`, one module per subcommand, and
:mod:`dse_tune.cli.common` (argument types and the one error path).

Library code never imports this package: everything a subcommand does is a function
of the library, which this package only parses arguments for and reports.
"""

from __future__ import annotations

from dse_tune.cli.main import main

__all__ = ["main"]
