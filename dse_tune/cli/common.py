"""What every ``dse-tune`` subcommand shares: argument types and the one error path.

Every user-facing failure goes through :func:`fail` (raise :class:`CommandError`):
one line ``error: ...`` on stderr and exit status 2, never a traceback, unless
``DSE_TUNE_DEBUG=1`` is set, which lets the original exception through to show where it
came from. :func:`dse_tune.cli.main.main` is the only place that catches it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOTHING_SELECTED",
    "EXIT_USAGE",
    "CommandError",
    "add_deprecated_alias",
    "check_device",
    "debug_enabled",
    "existing_dir",
    "existing_file",
    "fail",
    "format_number",
    "image_size",
    "integer_at_least",
    "number",
]

#: Bad input: a missing file, a wrong value (argparse's own usage errors use it too).
EXIT_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: ``select``/``sweep``: the runs were read but none has a candidate (no finite DSE evaluation).
EXIT_NOTHING_SELECTED = 1


class CommandError(Exception):
    """A failure to report as one ``error:`` line with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command: ``error: message`` on stderr, exit ``code`` (default 2)."""
    raise CommandError(message, code)


def debug_enabled() -> bool:
    """``DSE_TUNE_DEBUG=1``: show tracebacks instead of one-line errors."""
    return os.environ.get("DSE_TUNE_DEBUG", "").strip() not in ("", "0", "false", "no")


def format_number(value: float | None) -> str:
    """A number in a printed table: four significant digits, ``-`` for none.

    Example:
        >>> format_number(0.123456), format_number(None)
        ('0.1235', '-')
    """
    return "-" if value is None else f"{value:.4g}"


def integer_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``.

    Example:
        >>> integer_at_least(1)("3")
        3
        >>> integer_at_least(1)("0")
        Traceback (most recent call last):
        argparse.ArgumentTypeError: must be an integer >= 1, got '0'
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def number(text: str) -> float:
    """argparse type: a finite float."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def image_size(text: str) -> int | tuple[int, int] | str:
    """argparse type of every probe image size: ``N`` (a square, still an int as the
    option always gave), ``HxW`` -> ``(H, W)``, or ``native``.

    Example:
        >>> image_size("96x128"), image_size("32"), image_size("native")
        ((96, 128), 32, 'native')
    """
    from dse_tune.typed_config import parse_image_size

    try:
        size = parse_image_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return int(text) if text.strip().isdigit() else size


def check_device(device: str, flag: str = "--device") -> None:
    """Refuse a device torch does not know, or CUDA on a machine without it: one error
    line before any work, not one failure per checkpoint."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        fail(f"{flag} {device}: not a torch device ({error})")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        fail(f"{flag} {device}: CUDA is not available on this machine")


def existing_file(text: str) -> Path:
    """argparse type: a path to an existing file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a path to an existing folder."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path}" if not path.exists() else f"not a folder: {path}")
    return path


def add_deprecated_alias(parser: argparse.ArgumentParser, old_flag: str, new_flag: str, dest: str, **kwargs) -> None:
    """Keep ``old_flag`` working for one release: it sets ``dest`` like ``new_flag`` and warns on stderr.

    Hidden from ``--help``; ``kwargs`` (``type=...``) are those of ``new_flag``.
    """

    class _WarnAndStore(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"warning: {old_flag} is deprecated and will be removed in the next release; use {new_flag}",
                  file=sys.stderr)
            setattr(namespace, self.dest, values)

    parser.add_argument(old_flag, dest=dest, action=_WarnAndStore, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        **kwargs)
