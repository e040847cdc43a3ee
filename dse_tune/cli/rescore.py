"""``dse-tune rescore RUN_DIR``: score a sweep's candidate checkpoints on one held-out set.

Writes ``rescored.json`` (and the held-out set's description next to it) for
``dse-tune select --rescored``; the work is :func:`dse_tune.evaluation.rescore.rescore_sweep`.
Exit status: 0 when at least one checkpoint was rescored, 2 on bad input or when none
could be.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dse_tune.cli.common import add_deprecated_alias, check_device, fail, image_size, integer_at_least
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.evaluation.rescore import RESCORED_FILE, SCORES  # loads no torch: --help stays fast

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dse-tune rescore``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a sweep folder (or one run folder)")
    parser.add_argument(
        "--data",
        default=None,
        help="held-out images: a folder or 'synthetic' (default: the runs' training data minus "
        "every monitoring probe set image)",
    )
    parser.add_argument("--splits", nargs="+", default=None, help="split folders of --data (e.g. val)")
    parser.add_argument("--held-out-size", dest="held_out_size", type=integer_at_least(1), default=64, metavar="N",
                        help="number of held-out images (default: 64)")
    # Its name before "held-out set" (it never meant the monitor's probe set): one more release.
    add_deprecated_alias(parser, "--probe-size", "--held-out-size", "held_out_size", type=integer_at_least(1))
    parser.add_argument("--image-size", type=image_size, default=None, metavar="N|HxW|native",
                        help="the held-out images' size: N (square), HxW (e.g. 96x128) or native "
                        "(default: the runs' probe image size)")
    parser.add_argument("--dse-seed", type=int, default=0,
                        help="seed of DSE's k-means and token shuffle, the same for every checkpoint (default 0)")
    add_deprecated_alias(parser, "--seed", "--dse-seed", "dse_seed", type=int)
    parser.add_argument(
        "--scores", nargs="+", choices=SCORES, default=["dse"], help="scores to compute (default: dse)"
    )
    parser.add_argument(
        "--window", type=integer_at_least(0), default=CANDIDATE_WINDOW, help="candidate window, as in select (default: 2)"
    )
    parser.add_argument("--top", type=integer_at_least(1), default=CANDIDATE_TOP, help="candidates per run, as in select (default: 3)")
    parser.add_argument("--all", action="store_true", help="rescore every checkpoint, not only candidates")
    parser.add_argument("--device", default="cpu", help="torch device for the features (default: cpu)")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/rescored.json")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from dse_tune.evaluation.rescore import rescore_sweep

    check_device(args.device)
    out = args.out or args.run_dir / RESCORED_FILE
    try:
        mapping = rescore_sweep(
            args.run_dir, args.data, splits=args.splits, held_out_size=args.held_out_size, image_size=args.image_size,
            seed=args.dse_seed, scores=args.scores, window=args.window, top=args.top,
            which="all" if args.all else "candidates", device=args.device, out=out, progress=not args.no_progress,
        )
    except (OSError, ValueError, TypeError) as error:
        fail(str(error))
    print(f"rescored {len(mapping)} checkpoint(s); wrote {out}")
    print(f"next: dse-tune select {args.run_dir} --rescored {out}")
    return 0
