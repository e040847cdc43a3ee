"""``python -m dse_tune.integrations.optuna worker ...``: the older name of
``dse-tune optuna-worker``, deprecated; it will be removed in the next release.

It warns, then becomes ``python -m dse_tune.cli optuna-worker ...`` (the process is
replaced, so Ctrl-C and the exit status are that command's): the command line lives in
:mod:`dse_tune.cli`, which the integrations never import.
"""

import os
import sys

OLD_PROG = "python -m dse_tune.integrations.optuna"


def main(argv: list[str]) -> int:
    """Run the worker command (this process becomes it), or print the old usage."""
    if argv[:1] != ["worker"]:
        print(f"usage: {OLD_PROG} worker --storage STORAGE --study NAME [--n-trials K] [--timeout SECONDS]\n"
              "(deprecated: use 'dse-tune optuna-worker' with the same options)", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    print(f"warning: '{OLD_PROG} worker' is deprecated and will be removed in the next release; "
          "use 'dse-tune optuna-worker' with the same options", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "dse_tune.cli", "optuna-worker", *argv[1:]])


if __name__ == "__main__":  # not when a doctest collector imports this module
    sys.exit(main(sys.argv[1:]))
