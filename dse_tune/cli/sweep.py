"""``dse-tune sweep SPACE.yaml``: a label-free hyperparameter sweep on Ray Tune.

One DSE-monitored pretraining run per trial (search space: ``docs/search_spaces.md``):
Ray Tune runs the trials and the pruner stops those whose DSE degrades
(:func:`dse_tune.integrations.ray.sweep.run_sweep`); every candidate checkpoint is then
rescored on the same held-out images, which choose within a run, never across betas, and
:func:`dse_tune.evaluation.sweep_selection.select_sweep` picks the checkpoint and beta
(docs/selection.md), writing ``selection.json``, ``selection.png`` and
``sweep_summary.json`` into the sweep folder. This module reads the arguments and prints.
Examples::

    dse-tune sweep search_spaces/dino.yaml --data ../shared/data/camvid --out runs/dino_sweep
    dse-tune sweep search_spaces/demo_cpu.yaml --out runs/demo_sweep
    dse-tune sweep --resume runs/dino_sweep          # after an interruption
    RAY_ADDRESS=ray://head:10001 dse-tune sweep search_spaces/mae.yaml   # an existing cluster

Exit status: 0 when a checkpoint was selected, 1 when no trial has a candidate, 2 on bad
input, 130 when the sweep was interrupted (resume it with ``--resume``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dse_tune.cli.common import EXIT_INTERRUPTED, EXIT_NOTHING_SELECTED, fail, format_number, integer_at_least

__all__ = ["EXIT_NOTHING_SELECTED", "add_arguments", "execute", "print_choice", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Search space schema: docs/search_spaces.md"
    parser.add_argument("space", metavar="SPACE.yaml", type=Path, nargs="?",
                        help="the search space (not with --resume: the sweep folder keeps its own copy)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="pretraining images for every trial: a folder or 'synthetic' (default: the space's "
                        "pretrain.data)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="the sweep folder (default: STORAGE_PATH/NAME from the space)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue an interrupted sweep: unfinished trials resume from their last checkpoint, "
                        "finished ones are kept")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster on this machine)")
    parser.add_argument("--num-cpus", type=integer_at_least(1), default=None, metavar="N",
                        help="CPUs of a local cluster (default: all available)")
    parser.add_argument("--rescore-data", default=None, metavar="DIR",
                        help="held-out images for rescoring candidates: a folder or 'synthetic' (default: the "
                        "trials' data minus every monitoring probe image)")
    parser.add_argument("--rescore-splits", nargs="+", default=None, metavar="SPLIT",
                        help="split folders of --rescore-data")
    parser.add_argument("--rescore-size", type=integer_at_least(1), default=64, metavar="N",
                        help="number of held-out images (default: 64)")
    parser.add_argument("--no-rescore", action="store_true",
                        help="skip rescoring on held-out images (the choice within each run then uses the "
                        "monitored DSE)")
    parser.add_argument("--quiet", action="store_true", help="no progress table")


def run(args: argparse.Namespace) -> int:
    from dse_tune.runs import TUNER_STATE_FILE, is_sweep
    from dse_tune.search_space import SearchSpaceError, load_search_space

    if args.resume is not None and args.space is not None:
        fail("give either SPACE.yaml or --resume RUN_DIR, not both (a sweep keeps its own space)")
    if args.resume is None and args.space is None:
        fail("the search space is missing: dse-tune sweep SPACE.yaml (or --resume RUN_DIR)")
    if args.resume is not None and args.out is not None:
        fail("--out cannot move a sweep being resumed; it continues in RUN_DIR")

    spec = None
    if args.resume is not None:
        sweep_dir = args.resume
        if not is_sweep(sweep_dir):
            fail(f"--resume {sweep_dir}: not a sweep folder (no {TUNER_STATE_FILE})")
    else:
        try:
            spec = load_search_space(args.space)
        except SearchSpaceError as error:
            fail(str(error))
        sweep_dir = args.out if args.out is not None else Path(spec.storage_path) / spec.name
        if (sweep_dir / TUNER_STATE_FILE).exists():
            fail(f"{sweep_dir} already holds a sweep: continue it with --resume {sweep_dir}, or pass another --out")

    return execute(spec, sweep_dir, data=args.data, resume=args.resume is not None, address=args.address,
                   num_cpus=args.num_cpus, rescore=not args.no_rescore, rescore_data=args.rescore_data,
                   rescore_splits=args.rescore_splits, rescore_size=args.rescore_size, progress=not args.quiet)


def execute(
    spec: Any, sweep_dir: Path, *, data: str | None = None, resume: bool = False, address: str | None = None,
    num_cpus: int | None = None, rescore: bool = True, rescore_data: Any = None,
    rescore_splits: Sequence[str] | None = None, rescore_size: int = 64, progress: bool = True,
    trial_callbacks: tuple = (),
) -> int:
    """Run (or resume) the sweep, select, write and print; the exit status of the command.

    ``rescore_data``: held-out images for rescoring (a folder, ``"synthetic"`` or a
    dataset object; default: the trials' data minus their monitoring probe images).
    Bad input raises :class:`~dse_tune.cli.common.CommandError` (exit 2).
    """
    from dse_tune.evaluation.sweep_selection import select_sweep
    from dse_tune.integrations.ray import connect, progress_reporter, run_sweep
    from dse_tune.sweeps import load_saved_spec

    if resume:
        try:
            spec = load_saved_spec(sweep_dir)
        except (OSError, ValueError) as error:
            fail(f"--resume {sweep_dir}: {error}")
    print(connect(address, num_cpus=num_cpus), flush=True)
    try:
        summary = run_sweep(spec, sweep_dir, data=data, resume=resume, trial_callbacks=trial_callbacks,
                            progress_reporter=progress_reporter(spec) if progress else None, verbose=int(progress))
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        fail(str(error))
    sweep_dir = summary.sweep_dir

    print()
    choice = select_sweep(sweep_dir, spec, rescore=rescore, rescore_data=rescore_data,
                          rescore_splits=rescore_splits, rescore_size=rescore_size)
    print_choice(choice, sweep_dir)
    print(summary.describe())
    if not summary.complete:
        unfinished = [t.trial_id for t in summary.trials if t.status == "interrupted"]
        print(f"the sweep is not complete ({len(unfinished)} interrupted trial(s) of {summary.expected_trials}); "
              f"continue it with: dse-tune sweep --resume {sweep_dir}")
        return EXIT_INTERRUPTED
    result = choice.result
    return 0 if result is not None and result.best is not None else EXIT_NOTHING_SELECTED


def print_choice(choice: Any, sweep_dir: Path) -> None:
    """The selection table, the decision with its basis and reason, the chosen checkpoint
    and beta, the files written."""
    from dse_tune.cli.select import print_decision

    result = choice.result
    if result is None:
        print(f"no trial wrote a DSE history below {sweep_dir}; nothing to select")
        return
    print_decision(result, checkpoint=False)  # printed below as "chosen checkpoint"
    if result.best is not None:
        print(f"chosen checkpoint: {result.best_checkpoint}")
        print(f"chosen beta: {format_number(result.best_beta)} (trial {result.best.name}, epoch {result.best_epoch})")
        if choice.conservative is not None:
            _print_conservative_choice(choice.conservative, result)
    for path in choice.written:
        print(f"wrote {path}")


def _print_conservative_choice(safe: Any, chosen: Any) -> None:
    """Beside a few-label (or explicitly requested DSE) decision, what the label-free
    smallest-beta comparison keeps."""
    if safe.best is None:
        return
    same = safe.best.name == chosen.best.name
    print(f"conservative choice (smallest beta only): beta {format_number(safe.best_beta)} "
          f"(trial {safe.best.name}, epoch {safe.best_epoch}){': the same trial' if same else ''}")
    if not same and chosen.basis != "few_label":
        print("warning: a DSE comparison chose a larger beta; on CamVid, DSE (raw or rescored) picked the "
              "worse beta in all three comparisons (docs/selection.md). Confirm with a few labels "
              "(selection: {confirm_with: DIR}) or keep the conservative choice")
