"""``dse-tune demo``: the whole label-free pipeline on this machine, in a few minutes.

A tiny sweep (``search_spaces/demo_cpu.yaml``: a small MAE ViT on the embedded synthetic
scenes, no download, no labels) over two DSE regularization weights and two learning rates,
on a local Ray cluster: four trials, two at a time, scoring DSE on a fixed probe set and
stopped by the degradation rule; their candidates rescored on held-out scenes of a family
no trial trained on; the selector's checkpoint and beta written (``selection.json``,
``selection.png``) and printed with the basis of the decision. Then the label check the
synthetic masks allow (the selection never saw them): linear probe mIoU of the chosen
checkpoint beside its trial's last one, the sweep's best one and a random initialisation,
and whether the decision was right (:mod:`dse_tune.evaluation.label_check`).

Run it again on the same ``--out`` and it continues the sweep there (or, if it is
complete, selects again); delete the folder to start over.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from dse_tune.cli.common import fail, integer_at_least

__all__ = ["DEFAULT_OUT", "SPACE_NAME", "add_arguments", "chosen_checkpoint", "default_space", "label_check", "run"]

DEFAULT_OUT = Path("runs/demo")
SPACE_NAME = "demo_cpu.yaml"
#: Scene family of the held-out rescoring images: no demo trial trains on it, so the
#: DSE regularizer (beta > 0) never saw these images.
HELD_OUT_SCENE_SEED = 1000
HELD_OUT_IMAGES = 64
#: Labelled synthetic images per split of the label check: enough for a stable mIoU,
#: few enough for seconds per checkpoint.
LABEL_CHECK_IMAGES = 32


def default_space() -> Path:
    """``search_spaces/demo_cpu.yaml``, as installed with the package.

    Example:
        >>> default_space().name
        'demo_cpu.yaml'
    """
    from dse_tune.search_space import shipped_search_spaces

    return shipped_search_spaces()[SPACE_NAME.removesuffix(".yaml")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"the demo's sweep folder (default: {DEFAULT_OUT})")
    parser.add_argument("--space", type=Path, default=None, metavar="FILE",
                        help=f"search space (default: the shipped search_spaces/{SPACE_NAME})")
    parser.add_argument("--num-cpus", type=integer_at_least(1), default=None, metavar="N",
                        help="CPUs of the local Ray cluster (default: all available)")
    parser.add_argument("--quiet", action="store_true", help="no progress table")
    parser.add_argument("--no-label-check", action="store_true",
                        help="skip the closing label check (linear probe mIoU of the chosen, last, best and "
                        "random-init models)")


def _set_aside_another_space(out: Path, space: str | Path, *, explicit: bool = True) -> bool:
    """Rename (nothing is lost) a demo folder left by another version of the space asked
    for, since its trials would be judged against today's scenes; True if so. Without an
    explicit --space, a sweep of a differently named space (the user's own) is continued."""
    from dse_tune.sweeps import load_saved_spec
    from dse_tune.search_space import load_search_space

    try:
        saved = load_saved_spec(out).to_dict()
    except (OSError, ValueError):
        saved = {}
    wanted = load_search_space(space).to_dict()
    if not explicit and saved.get("name") not in (None, wanted.get("name")):
        return False
    differing = sorted(key for key in wanted if saved.get(key) != wanted.get(key))
    if not differing:
        return False
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = out.with_name(f"{out.name}.previous-{stamp}")
    for number in range(2, 1000):  # two set-asides within one second
        if not aside.exists():
            break
        aside = out.with_name(f"{out.name}.previous-{stamp}-{number}")
    out.rename(aside)
    print(f"{out} held a demo sweep of another search space (it differs in: {', '.join(differing)}); "
          f"moved it to {aside} and starting afresh")
    return True


def run(args: argparse.Namespace) -> int:
    from dse_tune.cli.sweep import execute
    from dse_tune.runs import is_sweep
    from dse_tune.search_space import SearchSpaceError, load_search_space

    space = args.space or default_space()
    resume = is_sweep(args.out) and not _set_aside_another_space(Path(args.out), space,
                                                                  explicit=args.space is not None)
    spec = None
    if resume:
        print(f"{args.out} already holds the demo sweep: continuing it (delete the folder to start over)")
    else:
        try:
            spec = load_search_space(space)
        except SearchSpaceError as error:
            fail(str(error))
        print(f"demo: {spec.total_trials} trials ({', '.join(sorted(spec.dimensions))}) of "
              f"{spec.fixed.get('method', 'dino')} on synthetic scenes, {spec.fixed.get('epochs')} epochs "
              f"at most, into {args.out}")
    # Tune warns about frequent experiment snapshots; tiny demo trials checkpoint every
    # few seconds by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from dse_tune.data import SyntheticScenes

    held_out = SyntheticScenes(num_images=HELD_OUT_IMAGES, image_size=64, seed=HELD_OUT_SCENE_SEED)
    started = time.monotonic()
    code = execute(spec, args.out, resume=resume, num_cpus=args.num_cpus, rescore=True, rescore_data=held_out,
                   rescore_size=HELD_OUT_IMAGES, progress=not args.quiet)
    if code == 0 and not args.no_label_check:
        label_check(args.out, progress=not args.quiet)
    print(f"demo finished in {time.monotonic() - started:.0f} s (exit status {code})")
    return code


def _selection(sweep_dir: Path) -> dict:
    """The sweep's ``selection.json`` ({} when missing or unreadable)."""
    from dse_tune.runs import SELECTION_FILE
    from dse_tune.sweeps import read_json

    return read_json(Path(sweep_dir) / SELECTION_FILE) or {}


def chosen_checkpoint(sweep_dir: Path) -> str | None:
    """The checkpoint the sweep's ``selection.json`` chose, or None."""
    return _selection(sweep_dir).get("best_checkpoint")


def label_check(sweep_dir: Path, *, progress: bool = True) -> dict | None:
    """Print the label check of the sweep's decision (see the module docstring), the
    selection's own verdict beside what the labels say; the check's dict, or None."""
    from dse_tune.evaluation.label_check import check_choice, format_label_check

    selection = _selection(sweep_dir)
    checkpoint = selection.get("best_checkpoint")
    if checkpoint is None:
        print("label check skipped: the sweep chose no checkpoint")
        return None
    print()
    try:
        check = check_choice(sweep_dir, checkpoint, "synthetic", images_per_split=LABEL_CHECK_IMAGES,
                             progress=progress, decision=selection)
    except (OSError, ValueError) as error:
        print(f"label check skipped: {error}")
        return None
    print(format_label_check(check))
    return check
