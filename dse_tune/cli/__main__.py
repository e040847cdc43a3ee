"""``python -m dse_tune.cli ...``: the same as the ``dse-tune`` console script."""

from __future__ import annotations

import sys

from dse_tune.cli.main import main

if __name__ == "__main__":  # importing this module (doctest collection) runs nothing
    sys.exit(main())
