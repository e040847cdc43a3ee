"""``dse-tune validate RUN_DIR --data DATA --out OUT``: check the label-free scores against
a labelled linear probe (labels needed).

The work is :func:`dse_tune.evaluation.validate.validate`; this module parses the
arguments and prints the table of correlations and the selection's mIoU. Exit status:
0 when the linear probe scored at least one checkpoint, 1 when it could score none (the
files are still written), 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dse_tune.cli.common import add_deprecated_alias, check_device, fail, image_size, integer_at_least
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW

__all__ = ["EXIT_NOTHING_SCORED", "add_arguments", "format_summary", "run"]

#: Exit status when no checkpoint could be scored by the linear probe.
EXIT_NOTHING_SCORED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dse-tune validate``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Example: dse-tune validate runs/dino --data ../shared/data/camvid --out runs/dino/validation\n"
        "Protocol and output fields: docs/validation.md"
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a pretraining run folder or a sweep folder")
    parser.add_argument("--data", required=True,
                        help="labelled images: a folder with SPLIT/images + SPLIT/masks (255 = ignore), or "
                             "'synthetic' (disjoint train/eval scenes of an unused scene family)")
    parser.add_argument("--out", required=True, type=Path, help="folder for validation.json and validation.png")
    parser.add_argument("--train-split", default="train", help="split the linear probe is fitted on (default: train)")
    parser.add_argument("--eval-split", default="test",
                        help="split the linear probe and the label-free scores are computed on (default: test)")
    parser.add_argument("--images-per-split", dest="images_per_split", type=integer_at_least(1),
                        default=None, metavar="N",
                        help="at most N labelled images per split, evenly spread (default: all; synthetic: 64)")
    # Its name before the linear probe was called so ("probe" means the DSE probe set): one more release.
    add_deprecated_alias(parser, "--probe-images", "--images-per-split", "images_per_split", type=integer_at_least(1))
    parser.add_argument("--num-classes", type=integer_at_least(1), default=None, metavar="K",
                        help="number of classes (default: max mask label + 1; synthetic: 6)")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="N|HxW|native",
                        help="size of the labelled images the checkpoints are scored on: N (square), HxW "
                             "(e.g. 96x128) or native (default: each run's probe image size)")
    parser.add_argument("--window", type=integer_at_least(0), default=CANDIDATE_WINDOW,
                        help="selection candidate window, +- evaluations (default: 2)")
    parser.add_argument("--top", type=integer_at_least(1), default=CANDIDATE_TOP, help="selection candidates kept (default: 3)")
    parser.add_argument("--batch-size", type=integer_at_least(1), default=64,
                        help="images per forward pass (default: 64)")
    parser.add_argument("--device", default="cpu", help="torch device for the features (default: cpu)")
    parser.add_argument("--threads", type=integer_at_least(1), default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw validation.png")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _format(value: Any) -> str:
    # round() first, so that -1e-6 prints as +0.000, not -0.000.
    return "   n/a" if value is None else f"{round(value, 3) + 0.0:+.3f}"


def format_summary(report: dict[str, Any]) -> str:
    """The printed summary: tau (with its p-value) and rho per score, then the selection's
    linear-probe mIoU beside the random-init baseline of the same architecture."""
    from dse_tune.evaluation.report import SCORE_NAMES

    p_values = report.get("kendall_p", {})
    lines = [f"{'score':<28} {'tau (pooled)':>12} {'p':>8} {'rho (pooled)':>12} {'mean tau/run':>12}"]
    for name in SCORE_NAMES:
        lines.append(
            f"{name:<28} {_format(report['kendall_tau'][name]):>12} {_format(p_values.get(name)):>8} "
            f"{_format(report['spearman'][name]):>12} {_format(report['kendall_tau_mean_over_runs'][name]):>12}"
        )
    selection = report["selection"]
    lines.append(
        f"mIoU: DSE-selected {_format(selection['selected']['miou'])}, last {_format(selection['last']['miou'])}, "
        f"best (oracle) {_format(selection['best']['miou'])}; gain vs last {_format(selection['gain_vs_last'])}"
    )
    baselines = sorted({value for value in (report.get("random_init") or {}).values() if value is not None})
    if baselines:
        shown = ", ".join(_format(value) for value in baselines)
        lines.append(f"random-init model of the same architecture (same linear probe): mIoU {shown}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``dse-tune validate``; its exit status is the module docstring's."""
    from dse_tune.evaluation.validate import VALIDATION_JSON, VALIDATION_PNG, validate

    check_device(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        report = validate(
            args.run_dir, args.data, args.out, train_split=args.train_split, eval_split=args.eval_split,
            images_per_split=args.images_per_split, num_classes=args.num_classes, image_size=args.image_size,
            window=args.window, top=args.top, batch_size=args.batch_size, device=args.device,
            plot=not args.no_plot, progress=not args.no_progress,
        )
    except (OSError, ValueError) as error:
        fail(str(error))
    print(format_summary(report))
    print(f"wrote {Path(args.out) / VALIDATION_JSON}" + ("" if args.no_plot else f" and {VALIDATION_PNG}"))
    if not any(r.get("miou") is not None for r in report["checkpoints"]):
        fail("the linear probe could score no checkpoint (see 'warnings' in the report)", EXIT_NOTHING_SCORED)
    return 0
