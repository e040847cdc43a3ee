"""``dse-tune sweep SPACE.yaml``: a label-free hyperparameter sweep on Ray Tune.

Runs one DSE-monitored pretraining run per trial (search space: ``docs/search_spaces.md``),
stops trials whose DSE degrades, then picks the checkpoint and beta to keep:

1. Ray Tune runs the trials (OptunaSearch on ``dse_best`` by default) and prints its
   progress table; the pruner stops degrading trials (they keep their candidates).
2. Every candidate checkpoint is rescored on the same held-out images
   (:mod:`dse_tune.rescore`), the fair comparison across betas.
3. :func:`dse_tune.selection.select_best` picks the checkpoint; ``selection.json`` and
   ``selection.png`` are written into the sweep folder, with ``sweep_summary.json``
   (trial-epochs run versus without pruning).

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
import sys
from pathlib import Path
from typing import Any

from dse_tune.selection_cli import integer_at_least

EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Search space schema: docs/search_spaces.md"
    parser.add_argument(
        "space",
        metavar="SPACE.yaml",
        type=Path,
        nargs="?",
        help="the search space (not with --resume: the sweep folder keeps its own copy)",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="pretraining images for every trial: a folder or 'synthetic' (default: the space's "
        "pretrain.data)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="the sweep folder (default: STORAGE_PATH/NAME from the space)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted sweep: unfinished trials resume from their last checkpoint, "
        "finished ones are kept",
    )
    parser.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local cluster on this machine)",
    )
    parser.add_argument(
        "--num-cpus",
        type=integer_at_least(1),
        default=None,
        metavar="N",
        help="CPUs of a local cluster (default: all available)",
    )
    parser.add_argument(
        "--rescore-data",
        default=None,
        metavar="DIR",
        help="held-out images for rescoring candidates: a folder or 'synthetic' (default: the "
        "trials' data minus every monitoring probe image)",
    )
    parser.add_argument(
        "--rescore-splits", nargs="+", default=None, metavar="SPLIT", help="split folders of --rescore-data"
    )
    parser.add_argument(
        "--rescore-size",
        type=integer_at_least(1),
        default=64,
        metavar="N",
        help="number of held-out images (default: 64)",
    )
    parser.add_argument(
        "--no-rescore",
        action="store_true",
        help="skip rescoring; then only the smallest beta's trials compete (see docs/selection.md)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress table")


def run(args: argparse.Namespace) -> int:
    from dse_tune.config import SearchSpaceError, load_search_space

    if args.resume is not None and args.space is not None:
        return _fail("give either SPACE.yaml or --resume RUN_DIR, not both (a sweep keeps its own space)", 2)
    if args.resume is None and args.space is None:
        return _fail("the search space is missing: dse-tune sweep SPACE.yaml (or --resume RUN_DIR)", 2)
    if args.resume is not None and args.out is not None:
        return _fail("--out cannot move a sweep being resumed; it continues in RUN_DIR", 2)

    spec = None
    if args.resume is not None:
        sweep_dir = args.resume
        if not (sweep_dir / "tuner.pkl").is_file():
            return _fail(f"--resume {sweep_dir}: not a sweep folder (no tuner.pkl)", 2)
    else:
        try:
            spec = load_search_space(args.space)
        except SearchSpaceError as error:
            return _fail(str(error), 2)
        sweep_dir = args.out if args.out is not None else Path(spec.storage_path) / spec.name
        if (sweep_dir / "tuner.pkl").exists():
            return _fail(
                f"{sweep_dir} already holds a sweep: continue it with --resume {sweep_dir}, or pass "
                "another --out",
                2,
            )

    return execute(
        spec,
        sweep_dir,
        data=args.data,
        resume=args.resume is not None,
        address=args.address,
        num_cpus=args.num_cpus,
        rescore=not args.no_rescore,
        rescore_data=args.rescore_data,
        rescore_splits=args.rescore_splits,
        rescore_size=args.rescore_size,
        progress=not args.quiet,
    )


def execute(
    spec: Any,
    sweep_dir: Path,
    *,
    data: str | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    rescore: bool = True,
    rescore_data: Any = None,
    rescore_splits: list[str] | None = None,
    rescore_size: int = 64,
    progress: bool = True,
    trial_callbacks: tuple = (),
) -> int:
    """Run (or resume) the sweep, select, write and print; the exit status of the command.

    ``rescore_data``: held-out images for rescoring (a folder, ``"synthetic"`` or a
    dataset object; default: the trials' data minus their monitoring probe images).
    """
    from ray import tune

    from dse_tune.integrations import ray as ray_integration

    if resume:
        try:
            spec = ray_integration.load_saved_spec(sweep_dir)
        except (OSError, ValueError) as error:
            return _fail(f"--resume {sweep_dir}: {error}", 2)
    print(ray_integration.connect(address, num_cpus=num_cpus), flush=True)
    reporter = None
    if progress:
        reporter = tune.CLIReporter(
            parameter_columns=list(spec.dimensions),
            metric_columns={"epoch": "epoch", "dse": "DSE", "dse_best": "best DSE"},
            max_report_frequency=30,
        )
    try:
        summary = ray_integration.run_sweep(
            spec,
            sweep_dir,
            data=data,
            resume=resume,
            trial_callbacks=trial_callbacks,
            progress_reporter=reporter,
            verbose=1 if progress else 0,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        return _fail(str(error), 2)
    sweep_dir = summary.sweep_dir

    print()
    result = select(
        sweep_dir,
        spec,
        rescore=rescore,
        rescore_data=rescore_data,
        rescore_splits=rescore_splits,
        rescore_size=rescore_size,
    )
    print(summary.describe())
    if not summary.complete:
        unfinished = [t.trial_id for t in summary.trials if t.status == "unfinished"]
        print(
            f"the sweep is not complete ({len(unfinished)} unfinished trial(s) of "
            f"{summary.expected_trials}); continue it with: dse-tune sweep --resume {sweep_dir}"
        )
        return EXIT_INTERRUPTED
    return 0 if result is not None and result.best is not None else 1


def select(
    sweep_dir: Path,
    spec: Any,
    *,
    rescore: bool = True,
    rescore_data: Any = None,
    rescore_splits: list[str] | None = None,
    rescore_size: int = 64,
) -> Any:
    """Rescore the candidates, select, write selection.json/png and print the table."""
    from dse_tune import selection
    from dse_tune.selection_cli import format_table

    runs = selection.load_sweep(sweep_dir)
    if not runs:
        print(f"no trial wrote a DSE history below {sweep_dir}; nothing to select")
        return None
    rescored = None
    if rescore:
        rescored = _rescore(sweep_dir, spec, rescore_data, rescore_splits, rescore_size)
    result = selection.select_best(runs, window=spec.window, top=spec.top, rescored=rescored)
    print(format_table(result))
    print()
    print(f"rule: {result.rule}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    written = [
        selection.write_selection(result, sweep_dir),
        selection.plot_selection(result, Path(sweep_dir) / "selection.png"),
    ]
    if result.best is None:
        print("no trial has a candidate checkpoint (no finite DSE evaluation)")
    else:
        print(f"chosen checkpoint: {result.best_checkpoint}")
        print(f"chosen beta: {_number(result.best_beta)} (trial {result.best.name}, epoch {result.best_epoch})")
        if result.compare == "rescored":
            _print_conservative_choice(runs, spec, rescored, result)
    for path in written:
        print(f"wrote {path}")
    return result


def _print_conservative_choice(runs: Any, spec: Any, rescored: Any, chosen: Any) -> None:
    """Also show what the smallest-beta comparison keeps: in the CamVid study held-out
    rescored DSE still chose the worse, larger beta every time (docs/validation.md, 5)."""
    from dse_tune import selection

    safe = selection.select_best(runs, window=spec.window, top=spec.top, rescored=rescored, compare="conservative")
    if safe.best is None:
        return
    same = safe.best.name == chosen.best.name
    print(
        f"conservative choice (smallest beta only): beta {_number(safe.best_beta)} "
        f"(trial {safe.best.name}, epoch {safe.best_epoch}){': the same trial' if same else ''}"
    )
    if not same:
        print(
            "warning: the rescored comparison chose a larger beta; on CamVid, rescored DSE picked the "
            "worse beta in all three comparisons (docs/validation.md, section 5). Check with labels "
            "(dse-tune validate) or keep the conservative choice (dse-tune select --compare conservative)"
        )


def _rescore(sweep_dir: Path, spec: Any, data: Any, splits: list[str] | None, size: int) -> Any:
    """Held-out DSE of every candidate, or None (with the reason) when not possible."""
    try:
        import torch

        from dse_tune.rescore import rescore_sweep
    except ImportError as error:  # rescoring is optional; selection still works without it
        print(f"rescoring unavailable ({error}); comparing trials conservatively")
        return None
    device = "cuda" if spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    try:
        rescored = rescore_sweep(
            sweep_dir,
            data,
            splits=splits,
            probe_size=size,
            window=spec.window,
            top=spec.top,
            device=device,
            progress=False,
        )
    except (OSError, ValueError, TypeError) as error:
        print(f"rescoring failed ({error}); comparing trials conservatively")
        return None
    print(f"rescored {len(rescored)} candidate checkpoint(s) on held-out images")
    return rescored


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _fail(message: str, code: int) -> int:
    print(f"dse-tune sweep: error: {message}", file=sys.stderr)
    return code
