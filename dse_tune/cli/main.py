"""``dse-tune``: the command line, and its one error path.

Each subcommand is a module of this package with ``add_arguments(parser)`` and
``run(args) -> int``; only the one being run is imported, so ``dse-tune --help`` stays
fast. :func:`main` is where every failure ends up: a
:class:`~dse_tune.cli.common.CommandError` (:func:`~dse_tune.cli.common.fail`) or a
user-input error that escaped a subcommand (``OSError``; ``ValueError``, which every
dse_tune error type subclasses) is one ``error:`` line, exit 2 unless it says otherwise;
Ctrl-C one line, exit 130; anything else is a bug: a traceback, exit 1. With
``DSE_TUNE_DEBUG=1`` nothing is caught. argparse's usage errors keep argparse's behaviour.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

from dse_tune.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, CommandError, debug_enabled

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

# subcommand -> (module, help). The module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "pretrain": ("dse_tune.cli.pretrain", "self-supervised pretraining with DSE monitoring"),
    "score": ("dse_tune.cli.score", "DSE of a model's dense features on a folder or the embedded scenes"),
    "track": ("dse_tune.cli.track", "score every checkpoint another training run wrote (a folder, or --watch it live)"),
    "sweep": ("dse_tune.cli.sweep", "label-free hyperparameter sweep (Ray Tune + Optuna)"),
    "select": ("dse_tune.cli.select", "pick the checkpoint and beta from a run or sweep"),
    "rescore": ("dse_tune.cli.rescore", "score a sweep's candidate checkpoints on the same held-out images"),
    "validate": ("dse_tune.cli.validate", "check label-free scores against a labelled linear probe"),
    "demo": ("dse_tune.cli.demo", "the embedded end-to-end demo (no download, no labels)"),
    "optuna-worker": ("dse_tune.cli.optuna_worker", "run trials of a shared Optuna study (one per process)"),
}

DESCRIPTION = "Label-free model selection for self-supervised dense features (the DSE score)."

# Errors of the user's input, not of dse_tune: reported as one line (see the module doc).
USER_ERRORS = (OSError, ValueError)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``dse-tune`` parser.

    Args:
        commands: the subcommands whose options are loaded (importing their modules);
            None loads all. The others are listed with their help line only.

    Example:
        >>> parser = build_parser(commands=["select"])  # imports dse_tune.cli.select only
        >>> args = parser.parse_args(["select", "runs/a", "--top", "2"])
        >>> args.command, args.top
        ('select', 2)
    """
    loaded = set(SUBCOMMANDS) if commands is None else set(commands)
    parser = argparse.ArgumentParser(prog="dse-tune", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name in loaded:
            _load(sub_parser, name, module_name)
    return parser


def _load(sub_parser: argparse.ArgumentParser, name: str, module_name: str) -> None:
    """Add the options of subcommand ``name`` and its ``run``."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:  # the module exists but one of its imports is missing: a bug
            raise
        sub_parser.set_defaults(_unavailable=f"'dse-tune {name}' is not available in this build")
        return
    module.add_arguments(sub_parser)
    sub_parser.set_defaults(_run=module.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dse-tune ARGV``; return the exit status (the only place errors are printed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(commands=_chosen_command(argv))
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        parser.error(args._unavailable)
    if debug_enabled():
        return int(args._run(args) or 0)
    try:
        return int(args._run(args) or 0)
    except CommandError as error:
        return _report(error.message, error.code)
    except KeyboardInterrupt:
        return _report(f"interrupted (dse-tune {args.command})", EXIT_INTERRUPTED, prefix="")
    except USER_ERRORS as error:
        return _report(_describe(error), EXIT_USAGE)


def _chosen_command(argv: Sequence[str]) -> list[str]:
    """The subcommand named in ``argv`` (the top-level parser has no options but --help)."""
    for token in argv:
        if not token.startswith("-"):
            return [token] if token in SUBCOMMANDS else []
    return []


def _report(message: str, code: int, prefix: str = "error: ") -> int:
    # One line, whatever the message holds: scripts and log scrapers read the first line.
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"{prefix}{one_line}", file=sys.stderr)
    return code


def _describe(error: BaseException) -> str:
    """The message of an uncaught user error; a bare OSError message may not name its file."""
    text = str(error) or type(error).__name__
    filename = getattr(error, "filename", None)
    if isinstance(error, OSError) and filename is not None and str(filename) not in text:
        text = f"{filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
