"""``python -m dse_tune.integrations.optuna worker ...``: the ``dse-tune optuna-worker``
command under its older name (see :mod:`dse_tune.cli.optuna_worker`)."""

import sys

from dse_tune.cli.optuna_worker import main

if __name__ == "__main__":  # not when a doctest collector imports this module
    sys.exit(main())
