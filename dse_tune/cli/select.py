"""``dse-tune select RUN_DIR``: candidates, best checkpoint and best beta of a run or sweep.

Reads every run folder below RUN_DIR (:func:`dse_tune.runs.load_sweep`), prints one row
per trial, and writes ``selection.json`` and ``selection.png`` (into RUN_DIR unless
``--out`` says otherwise). Exit status: 0 when a checkpoint was selected, 1 when no trial
has a candidate, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dse_tune.cli.common import fail, integer_at_least

__all__ = ["COMPARE_CHOICES", "add_arguments", "format_table", "run"]

COMPARE_CHOICES = ("auto", "rescored", "conservative", "raw")
#: Exit status when the runs were read but none has a finite DSE evaluation.
EXIT_NOTHING_SELECTED = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        type=Path,
        help="a run directory (with dse_history.json) or a sweep directory, searched recursively",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write selection.json and selection.png (default: RUN_DIR)",
    )
    parser.add_argument(
        "--window",
        type=integer_at_least(0),
        default=2,
        help="a candidate is the maximum within +-WINDOW evaluations (default: 2)",
    )
    parser.add_argument(
        "--top", type=integer_at_least(1), default=3, help="candidates kept per trial (default: 3)"
    )
    parser.add_argument(
        "--rescored",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON {checkpoint: held-out DSE} or [{checkpoint, dse}] (paths relative to FILE); "
        "enables the fair comparison across betas",
    )
    parser.add_argument(
        "--compare",
        choices=COMPARE_CHOICES,
        default="auto",
        help="how trials are compared: rescored, conservative (smallest beta only) or raw "
        "(biased toward large beta); auto: rescored with --rescored, else conservative",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write selection.png")


def run(args: argparse.Namespace) -> int:
    # Standard library only (no torch), so selecting stays quick.
    from dse_tune import selection
    from dse_tune.runs import HISTORY_FILE, load_sweep
    from dse_tune.evaluation.rescore import load_rescored

    try:
        runs = load_sweep(args.run_dir)
        if not runs:
            fail(f"no {HISTORY_FILE} below {args.run_dir}")
        rescored = None if args.rescored is None else load_rescored(args.rescored)
        result = selection.select_best(
            runs, window=args.window, top=args.top, rescored=rescored, compare=args.compare
        )
    except (OSError, ValueError) as error:
        fail(str(error))

    print(format_table(result))
    print()
    print(f"rule: {result.rule}")
    for warning in result.warnings:
        print(f"warning: {warning}")

    out_dir = args.run_dir if args.out is None else args.out
    written = [selection.write_selection(result, out_dir)]
    if not args.no_plot:
        from dse_tune.plotting import plot_selection

        written.append(plot_selection(result, Path(out_dir) / "selection.png"))
    if result.best is not None:
        print(
            f"best: {result.best.name}, epoch {result.best_epoch}, beta "
            f"{_number(result.best_beta)}, checkpoint {result.best_checkpoint}"
        )
    for path in written:
        print(f"wrote {path}")
    if result.best is None:
        # selection.json is still written: it records why nothing was selected.
        fail("no trial has a candidate (no finite DSE evaluation)", EXIT_NOTHING_SELECTED)
    return 0


def format_table(result) -> str:
    """One row per trial; ``*`` marks the selected one."""
    with_rescored = any(t.rescored for t in result.trials)
    header = ["", "trial", "beta", "evals", "candidates (epochs)", "chosen epoch", "DSE"]
    if with_rescored:
        header.append("rescored")
    header.append("stopped early")
    rows = [header]
    for t in result.trials:
        candidates = ", ".join(
            _epoch(e, t.run.evaluations[p].index)
            for e, p in zip(t.candidate_epochs, t.candidates, strict=True)
        )
        row = [
            "*" if t is result.best else "",
            t.name,
            _number(t.beta),
            str(t.evaluations),
            candidates or (t.run.problem and "unreadable") or "none",
            "-" if t.chosen is None else _epoch(t.chosen_epoch, t.chosen_index),
            _number(t.chosen_dse),
        ]
        if with_rescored:
            row.append(_number(t.chosen_rescored))
        row.append("yes" if t.stopped_early else "no")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _epoch(epoch: int | None, index: int | None) -> str:
    # Histories without epochs still have evaluation indices.
    return str(epoch) if epoch is not None else f"#{index}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
