"""``dse-tune track``: DSE of every checkpoint another training run wrote, as a run folder.

Examples::

    dse-tune track dino_run/ --arch vit_small_patch16_224 --data photos/ --out runs/dino-tracked
    dse-tune track 'mae_run/checkpoint-*.pth' --arch vit_base_patch16_224 --data synthetic --out runs/mae
    dse-tune track run/checkpoints --format lightning --arch vit_tiny_patch16_224 \\
        --arch-kwargs '{"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}' \\
        --data synthetic --probe-size 16 --synthetic-size 16 --out runs/tracked
    dse-tune track live_run/ --arch resnet50 --data photos/ --out runs/live --watch 60   # a sidecar

The output is a run folder (``docs/run-folder.md``) that ``select`` and ``validate``
read; re-running scores only new checkpoints. A file that cannot be read or does not fit
the architecture is recorded as failed, the others are scored, and the command ends with
one ``error:`` line saying how many failed and why (exit 2).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
import sys
from pathlib import Path

from dse_tune.cli.common import (EXIT_INTERRUPTED, add_deprecated_alias, check_device, fail, image_size,
                                 integer_at_least, number)
from dse_tune.decision import run_choice

__all__ = ["add_arguments", "format_layers", "format_summary", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", metavar="CHECKPOINTS", nargs="?",
                        help="a folder, a glob, or a text file listing paths")
    parser.add_argument("--out", type=Path, default=None, metavar="RUN_DIR", help="the run folder to write (required)")
    parser.add_argument("--list-archs", action="store_true",
                        help="print the architecture presets of the official models and exit")
    add_model_arguments(parser, required=False)
    parser.add_argument("--epoch-regex", default=None, metavar="RE",
                        help="read epochs from file names with this regex (a group 'epoch' or one group)")
    parser.add_argument("--layer", default="-1", help="-1 (last block + final norm, default), a block index, or all")
    parser.add_argument("--raw-layers", action="store_true",
                        help="with --layer i/all: raw block outputs (default: the final norm on every block, as "
                             "the paper's per-layer code)")
    add_probe_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--batch-size", type=integer_at_least(1), default=64, help="probe images per forward pass")
    rule = parser.add_argument_group("early warning (the degradation rule)")
    rule.add_argument("--warmup", type=integer_at_least(0), default=5, help="no alert before this many evaluations")
    rule.add_argument("--patience", type=integer_at_least(1), default=3, help="evaluations in a row below the peak")
    rule.add_argument("--min-drop", type=number, default=0.1, help="drop from the peak, share of the run's DSE range")
    watch = parser.add_argument_group("sidecar mode")
    watch.add_argument("--watch", type=number, default=None, metavar="SECONDS",
                       help="keep polling CHECKPOINTS every SECONDS; score each new file once (Ctrl-C ends)")
    watch.add_argument("--watch-timeout", type=number, default=None, metavar="SECONDS", help="end watching after this")
    watch.add_argument("--max-checkpoints", type=integer_at_least(1), default=None,
                       help="end watching after scoring this many new checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_model_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """The options that say how a checkpoint is read (shared with ``dse-tune score``)."""
    from dse_tune.checkpoints import FORMAT_NAMES

    parser.add_argument("--arch", required=required, default=None,
                        help="a preset of an official model (dino_vits16, mocov3_vits16, ijepa_vith14, ...: "
                             "dse-tune track --list-archs), a timm or torchvision name, or module:function")
    parser.add_argument("--arch-kwargs", default=None, metavar="JSON",
                        help='constructor keywords, e.g. \'{"img_size": 64, "patch_size": 8, "depth": 4}\'')
    parser.add_argument("--format", default="auto", metavar="NAME",
                        help=f"checkpoint layout: auto (default), {', '.join(FORMAT_NAMES)}; NAME:BRANCH for another branch")
    parser.add_argument("--prefix", default=None, help="the backbone's key prefix, overriding the format's")
    parser.add_argument("--allow-missing", nargs="+", default=[], metavar="PATTERN",
                        help="model keys that may be absent (fnmatch, or re:REGEX)")
    parser.add_argument("--allow-extra", nargs="+", default=[], metavar="PATTERN",
                        help="backbone keys of the checkpoint with no place in the model that may be left out")
    parser.add_argument("--trust", action="store_true",
                        help="allow checkpoints that pickle objects (runs their code: only for your own files)")


def add_probe_arguments(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The probe set options (``defaults=False``: None, so a run's config can fill them)."""
    parser.add_argument("--data", default="synthetic" if defaults else None, help="an image folder, or 'synthetic'")
    parser.add_argument("--splits", nargs="*", default=None, help="split folders to read (e.g. train val)")
    parser.add_argument("--probe-size", type=integer_at_least(2), default=64 if defaults else None,
                        help="number of probe images (default 64)")
    parser.add_argument("--image-size", type=image_size, default=None, metavar="N|HxW|native",
                        help="probe images' size: N (square), HxW (e.g. 96x128) or native (default: the architecture's)")
    parser.add_argument("--dse-seed", type=int, default=0 if defaults else None,
                        help="seed of DSE's k-means and token shuffle (default 0)")
    add_deprecated_alias(parser, "--seed", "--dse-seed", "dse_seed", type=int)
    parser.add_argument("--synthetic-size", type=integer_at_least(1), default=512 if defaults else None,
                        help="with --data synthetic: number of scenes (default 512)")
    parser.add_argument("--synthetic-seed", type=int, default=0 if defaults else None,
                        help="with --data synthetic: the scene family (default 0)")


def read_settings(args: argparse.Namespace):
    """:class:`~dse_tune.checkpoint_tracking.ReadSettings` from the model options."""
    from dse_tune.checkpoints import ArchitectureError
    from dse_tune.checkpoints.arch import _parse_kwargs
    from dse_tune.checkpoint_tracking import ReadSettings

    try:
        kwargs = _parse_kwargs(args.arch_kwargs)
    except ArchitectureError as error:
        fail(f"--arch-kwargs: {error}")
    layer = getattr(args, "layer", "-1")
    if layer != "all":
        try:
            layer = int(layer)
        except ValueError:
            fail(f"--layer must be -1, a block index or 'all', got {layer!r}")
    return ReadSettings(args.arch, kwargs, args.format, args.prefix, tuple(args.allow_missing), layer, args.trust,
                        tuple(args.allow_extra), not getattr(args, "raw_layers", False))


def probe_settings(args: argparse.Namespace, recorded: dict | None = None):
    """:class:`~dse_tune.checkpoint_tracking.ProbeSettings`: ``recorded`` (a run's config), then the flags given."""
    from dse_tune.checkpoint_tracking import ProbeSettings

    if args.data is not None and args.data != "synthetic" and not Path(args.data).is_dir():
        fail(f"--data {args.data}: no such folder" if not Path(args.data).exists() else f"--data {args.data}: not a folder")
    return ProbeSettings.from_config(
        recorded or {},
        data=args.data,
        splits=args.splits,
        probe_size=args.probe_size,
        image_size=args.image_size,
        probe_seed=args.dse_seed,
        synthetic_size=args.synthetic_size,
        seed=args.synthetic_seed,
    )


def run(args: argparse.Namespace) -> int:
    from dse_tune.degradation import DegradationRule
    from dse_tune.checkpoint_tracking import track_checkpoints, watch_checkpoints

    if args.list_archs:
        from dse_tune.checkpoints import preset_table

        print(preset_table())
        return 0
    for value, flag in ((args.checkpoints, "CHECKPOINTS"), (args.out, "--out RUN_DIR"), (args.arch, "--arch")):
        if value is None:
            fail(f"{flag} is required (or --list-archs)")
    check_device(args.device)
    read, probe = read_settings(args), probe_settings(args)
    try:
        rule = DegradationRule(warmup=args.warmup, patience=args.patience, min_drop=args.min_drop)
    except ValueError as error:
        fail(f"degradation rule: {error}")
    options = dict(rule=rule, device=args.device, batch_size=args.batch_size, epoch_regex=args.epoch_regex)
    try:
        if args.watch is None:
            result = track_checkpoints(args.checkpoints, args.out, read, probe, progress=not args.no_progress, **options)
        else:
            print(f"watching {args.checkpoints} every {args.watch:g} s (Ctrl-C to stop)")
            result = watch_checkpoints(
                args.checkpoints, args.out, read, probe, interval=args.watch, timeout=args.watch_timeout,
                max_checkpoints=args.max_checkpoints, on_scored=_print_scored, **options,
            )
    except KeyboardInterrupt:
        from dse_tune.runs import read_run

        print(f"\ninterrupted; the run folder {args.out} holds every checkpoint scored so far", file=sys.stderr)
        try:
            print(format_summary(read_run(args.out).evaluations, [], []))
        except (OSError, ValueError):
            pass
        return EXIT_INTERRUPTED
    _report(result, args.out)
    _fail_on_failures(result)
    return 0


def _fail_on_failures(result) -> None:
    """Exit non-zero when a file of this pass could not be scored (after all were tried)."""
    failed = result.failed
    if not failed:
        return
    if len(failed) == len(result.scored):  # nothing fitted: the first reason is the fix
        reason = failed[0].failure.split(": ", 1)[-1]
        fail(reason + (f" (and {len(failed) - 1} more file(s) failed)" if len(failed) > 1 else ""))
    reasons = Counter(evaluation.failure.split(":", 1)[0] for evaluation in failed)
    why = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
    fail(f"{len(failed)} of {len(result.scored)} checkpoint(s) failed ({why}); the others were scored "
         "(see the FAILED rows above)")


def _print_scored(evaluation) -> None:
    failure = f"  failed: {evaluation.failure}" if evaluation.failure else ""
    print(f"scored epoch {evaluation.epoch}: DSE {evaluation.dse:.5f}  {evaluation.checkpoint}{failure}", flush=True)


def _report(result, out: Path) -> None:
    if result.load_summary:
        print(f"format: {result.load_summary}")
    print(f"scored {len(result.scored)} new checkpoint(s); the run holds {len(result.run.evaluations)}")
    print(format_summary(result.run.evaluations, result.standardized, result.candidates))
    if result.layers is not None:
        print()
        print(format_layers(result.layers))
    for line in result.alerts:
        print(line)
    if result.run.stopped_early and not result.alerts:
        print(f"degradation (earlier pass): {result.run.stop_reason}")
    choice = run_choice(result.run)  # the one decision (what `dse-tune select` keeps), and how sure it is
    if choice.chosen is not None:
        print(f"kept: epoch {result.run.evaluations[choice.chosen].epoch} [{choice.verdict}]: {choice.reason}")
    print(f"wrote {out}")


def format_summary(evaluations, standardized, candidates) -> str:
    """The run as a table: epoch, DSE, its noise (standard error), components, standardised
    DSE, candidate rank, failure."""
    header = f"{'#':>3} {'epoch':>6} {'step':>8} {'dse':>9} {'+-noise':>8} {'inter':>8} {'intra_img':>9} " \
             f"{'intra_bat':>9} {'dim':>8} {'std':>8} {'cand':>4}  checkpoint"
    lines = [header]
    rank = {index: position + 1 for position, index in enumerate(candidates)}
    for e in evaluations:
        std = standardized[e.index] if e.index < len(standardized) else None
        parts = [f"{e.index:>3}", f"{_text(e.epoch):>6}", f"{_text(e.global_step):>8}", f"{_number(e.dse, 9)}",
                 _number(e.noise, 8)]
        parts += [_number(e.components.get(name), width) for name, width in
                  (("inter", 8), ("intra_image", 9), ("intra_batch", 9), ("dim", 8))]
        parts += [_number(std, 8), f"{('*' + str(rank[e.index])) if e.index in rank else '':>4}"]
        tail = Path(e.checkpoint).name if e.checkpoint else "-"
        lines.append(" ".join(parts) + f"  {tail}" + (f"  FAILED: {e.failure}" if e.failure else ""))
    return "\n".join(lines)


def format_layers(layers) -> str:
    """Per-layer DSE: one row per checkpoint, the best layer of each marked."""
    names = layers["layers"]
    width = max(10, *(len(name) for name in names))
    lines = [f"{'epoch':>6} " + " ".join(f"{name:>{width}}" for name in names) + "  best"]
    for row in layers["checkpoints"]:
        cells = " ".join(_number(value, width) for value in row["dse"])
        lines.append(f"{_text(row['epoch']):>6} {cells}  {row['best_layer'] or '-'}")
    return "\n".join(lines)


def _text(value) -> str:
    return "-" if value is None else str(value)


def _number(value, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'nan':>{width}}"
    return f"{value:>{width}.5f}" if width >= 9 else f"{value:>{width}.4f}"
