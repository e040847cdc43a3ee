"""``dse-tune select RUN_OR_SWEEP``: candidates, best checkpoint and best beta.

Reads every run folder below RUN_OR_SWEEP, prints one row per trial and the decision
(what was chosen, its basis, the reason, the warnings), and writes ``selection.json`` and
``selection.png``. In a sweep folder, whose ``selection.json`` is the sweep's decision,
``select`` reuses the comparison and held-out values (``rescored.json``) the sweep
recorded, and writes ``selection_cli.json`` (and ``.png``) beside it unless ``--out`` is
given. Every flag overrides what the sweep recorded: ``--confirm-with DIR`` without
``--compare`` decides by few labels even where the sweep compared conservatively.

Exit status: 0 when a checkpoint was selected, 1 when no trial has a candidate, 2 on bad
input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dse_tune.cli.common import EXIT_NOTHING_SELECTED, existing_dir, fail, format_number, integer_at_least
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.evaluation.rescore import RESCORED_FILE  # loads no torch

__all__ = ["CLI_SELECTION_FILE", "COMPARE_CHOICES", "add_arguments", "format_table", "print_decision",
           "recorded_settings", "run"]

COMPARE_CHOICES = ("auto", "conservative", "few_label", "rescored", "raw")
#: What ``select`` writes in a sweep folder without ``--out`` (the sweep owns selection.json).
CLI_SELECTION_FILE = "selection_cli.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_OR_SWEEP", type=Path,
                        help="a run directory (with dse_history.json) or a sweep directory, searched recursively")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write selection.json and selection.png here (default: RUN_DIR; in a sweep folder "
                        "selection_cli.json, so the sweep's own selection.json is kept)")
    parser.add_argument("--window", type=integer_at_least(0), default=None,
                        help="a candidate is the maximum within +-WINDOW evaluations (default: 2, or the sweep's)")
    parser.add_argument("--top", type=integer_at_least(1), default=None,
                        help="candidates kept per trial (default: 3, or the sweep's)")
    parser.add_argument("--score", choices=("raw", "standardized"), default=None,
                        help="rank candidates by raw DSE or the run-standardised DSE (default: raw, or the sweep's)")
    parser.add_argument("--rescored", type=Path, default=None, metavar="FILE",
                        help="JSON {checkpoint: held-out DSE} or [{checkpoint, dse}] (paths relative to FILE); "
                        "decides within each trial (and across trials with --compare rescored)")
    parser.add_argument("--compare", choices=COMPARE_CHOICES, default=None,
                        help="how trials are compared: conservative (smallest beta only), few_label (needs "
                        "--confirm-with), rescored or raw (both biased toward large beta); auto: few_label with "
                        "--confirm-with, else conservative. Default: the sweep's recorded comparison, else auto")
    parser.add_argument("--confirm-with", type=existing_dir, default=None, metavar="DIR",
                        help="labelled folder (images/ + masks/, or SPLIT/...): decide by linear-probe mIoU of the "
                        "DSE-shortlisted candidates on a few of its images")
    parser.add_argument("--label-images", type=integer_at_least(2), default=None, metavar="N",
                        help="labelled images used by --confirm-with, half to fit, half to score (default: 32)")
    parser.add_argument("--label-split", nargs="+", default=None, metavar="SPLIT",
                        help="split folder(s) of --confirm-with (e.g. val)")
    parser.add_argument("--device", default="cpu", help="device for --confirm-with (default: cpu)")
    parser.add_argument("--no-plot", action="store_true", help="do not write selection.png")


def recorded_settings(run_dir: Path) -> dict[str, Any]:
    """The comparison a sweep recorded in its ``selection.json``, and its held-out values
    (``rescored``: the sweep's ``rescored.json``) when it has them; {} for a plain run folder."""
    from dse_tune.runs import SELECTION_FILE, is_sweep
    from dse_tune.sweeps import read_json

    path = run_dir / SELECTION_FILE
    if not (is_sweep(run_dir) and path.is_file()):
        return {}
    data = read_json(path)
    if data is None:
        fail(f"cannot read the sweep's {path}: not a readable JSON object")
    parameters = data.get("parameters") or {}
    recorded = {key: data.get(key) for key in ("compare", "score", "window", "top") if data.get(key) is not None}
    for key in ("confirm_with", "label_images", "label_split"):
        if parameters.get(key) is not None:
            recorded[key] = parameters[key]
    if (run_dir / RESCORED_FILE).is_file():
        recorded["rescored"] = run_dir / RESCORED_FILE
    return recorded


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings to select with: flags, else the sweep's recorded ones, else defaults.

    A flag overrides what it implies too: ``--confirm-with`` asks for the labels to
    decide, so a recorded comparison that would ignore them (conservative) is not reused.
    """
    recorded = recorded_settings(args.run_dir)
    if args.confirm_with is not None and recorded.get("compare") not in (None, "auto", "few_label"):
        recorded.pop("compare")
    given = {"compare": args.compare, "score": args.score, "window": args.window, "top": args.top,
             "confirm_with": args.confirm_with, "label_images": args.label_images, "label_split": args.label_split,
             "rescored": args.rescored}
    defaults = {"compare": "auto", "score": "raw", "window": CANDIDATE_WINDOW, "top": CANDIDATE_TOP, "confirm_with": None,
                "label_images": 32, "label_split": None, "rescored": None}
    settings = {key: given[key] if given[key] is not None else recorded.get(key, defaults[key]) for key in defaults}
    reused = {key: value for key, value in recorded.items() if given.get(key) is None}
    return settings, reused


def _select(args: argparse.Namespace, settings: dict[str, Any]) -> Any:
    from dse_tune import selection
    from dse_tune.evaluation.rescore import load_rescored
    from dse_tune.runs import HISTORY_FILE, load_sweep

    runs = load_sweep(args.run_dir)
    if not runs:
        fail(f"no {HISTORY_FILE} below {args.run_dir}")
    rescored_file = settings["rescored"]
    if rescored_file is None and settings["compare"] == "rescored":
        rescored_file = args.run_dir / RESCORED_FILE  # what the sweep rescored with
    rescored = None if rescored_file is None else load_rescored(rescored_file)
    confirmed, parameters = None, {}
    if settings["confirm_with"] is not None and settings["compare"] in ("auto", "few_label"):
        from dse_tune.evaluation.few_label import confirm_candidates, select_with_labels

        scores = confirm_candidates(
            runs, settings["confirm_with"], label_images=settings["label_images"], splits=settings["label_split"],
            window=settings["window"], top=settings["top"], score=settings["score"], device=args.device,
        )
        confirmed = scores.values
        parameters = {"confirm_with": str(settings["confirm_with"]), "label_images": settings["label_images"],
                      "label_split": settings["label_split"], "labels_used": scores.labels_used,
                      "few_label_images": scores.description, "few_label_problems": scores.problems}
        # A few-label winner only beyond the spread of its scored images (else the label-free choice).
        return select_with_labels(runs, scores, window=settings["window"], top=settings["top"], rescored=rescored,
                                  score=settings["score"], parameters=parameters)
    return selection.select_best(
        runs, window=settings["window"], top=settings["top"], rescored=rescored, compare=settings["compare"],
        score=settings["score"], confirmed=confirmed, parameters=parameters,
    )


def run(args: argparse.Namespace) -> int:
    # Standard library only (no torch) unless --confirm-with, so selecting stays quick.
    from dse_tune import selection
    from dse_tune.runs import SELECTION_FILE, is_sweep

    try:
        settings, reused = _settings(args)
        if reused:
            shown = ", ".join(f"{key}={getattr(value, 'name', value)}" for key, value in reused.items())
            print(f"reusing the sweep's recorded comparison ({shown}) from {args.run_dir / SELECTION_FILE}; "
                  "flags override it")
        result = _select(args, settings)
    except (OSError, ValueError) as error:
        fail(str(error))

    print_decision(result)

    # The sweep's selection.json is the sweep's decision: keep it unless --out says where.
    in_sweep = args.out is None and is_sweep(args.run_dir)
    out_dir = args.run_dir if args.out is None else args.out
    name = CLI_SELECTION_FILE if in_sweep else SELECTION_FILE
    written = [selection.write_selection(result, out_dir, name=name)]
    if not args.no_plot:
        from dse_tune.plotting import plot_selection

        written.append(plot_selection(result, Path(out_dir) / Path(name).with_suffix(".png")))
    if result.best is not None:
        print(f"best: {result.best.name}, epoch {result.best_epoch}, beta {format_number(result.best_beta)}, "
              f"checkpoint {result.best_checkpoint}")
    for path in written:
        print(f"wrote {path}")
    if result.best is None:
        # selection.json is still written: it records why nothing was selected.
        fail("no trial has a candidate (no finite DSE evaluation)", EXIT_NOTHING_SELECTED)
    return 0


def print_decision(result: Any, *, checkpoint: bool = True) -> None:
    """The table of trials, the rule, and the decision in words."""
    from dse_tune.selection import describe_decision

    print(format_table(result))
    print()
    print(f"rule: {result.rule}")
    for line in describe_decision(result, checkpoint=checkpoint):
        print(line)


def format_table(result) -> str:
    """One row per trial; ``*`` marks the selected one."""
    with_rescored = any(t.rescored for t in result.trials)
    with_few_label = any(t.confirmed for t in result.trials)
    header = ["", "trial", "beta", "evals", "candidates (epochs)", "chosen epoch", "DSE"]
    header += ["rescored"] * with_rescored + ["few-label mIoU"] * with_few_label + ["stopped early", "signature"]
    rows = [header]
    for t in result.trials:
        candidates = ", ".join(_epoch(e, t.run.evaluations[p].index)
                               for e, p in zip(t.candidate_epochs, t.candidates, strict=True))
        row = [
            "*" if t is result.best else "",
            t.name,
            format_number(t.beta),
            str(t.evaluations),
            candidates or (t.run.problem and "unreadable") or "none",
            "-" if t.chosen is None else _epoch(t.chosen_epoch, t.chosen_index),
            format_number(t.chosen_dse),
        ]
        row += [format_number(t.chosen_rescored)] * with_rescored + [format_number(t.chosen_confirmed)] * with_few_label
        row.append("yes" if t.stopped_early else "no")
        row.append(", ".join(f"{s.kind}@{s.epoch}" for s in t.signatures) or "-")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _epoch(epoch: int | None, index: int | None) -> str:
    # Histories without epochs still have evaluation indices.
    return str(epoch) if epoch is not None else f"#{index}"
