"""The label check of a label-free decision: was the chosen checkpoint a good one?

Where labels exist (the demo's synthetic scenes have masks), the linear probe's mIoU
(:func:`dse_tune.evaluation.validate.score_checkpoint`) of the chosen checkpoint is set
beside the last checkpoint of the same run, the best checkpoint of the whole sweep by
mIoU (an oracle that needs labels) and a randomly initialised model of the same
architecture (:func:`dse_tune.evaluation.validate.random_init_baselines`). The decision
is called right when it is within ``tolerance`` mIoU of the best.

Example:
    >>> check = {"chosen": {"run": "a", "epoch": 9, "miou": 0.30}, "last": {"run": "a", "epoch": 14, "miou": 0.28},
    ...          "best": {"run": "b", "epoch": 12, "miou": 0.305}, "random_init": {"run": "a", "epoch": None, "miou": 0.2},
    ...          "right": True, "tolerance": 0.01, "images_per_split": 32}
    >>> print(format_label_check(check))  # doctest: +NORMALIZE_WHITESPACE
    label check (linear probe mIoU, 32 labelled images per split):
      chosen checkpoint     30.0  a, epoch 9
      last of that trial    28.0  a, epoch 14
      best of the sweep     30.5  b, epoch 12
      random init           20.0  same architecture as a
    the decision was right: the chosen checkpoint is within 1.0 mIoU points of the best (-0.5)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["check_choice", "format_label_check"]


def _same_file(a: Any, b: Any) -> bool:
    return a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b)


def _entry(run: Any, evaluation: Any, miou: float | None) -> dict[str, Any]:
    return {"run": run.name, "epoch": getattr(evaluation, "epoch", None), "miou": miou}


def check_choice(
    run_dir: str | os.PathLike,
    chosen_checkpoint: str | os.PathLike,
    data: str | os.PathLike = "synthetic",
    *,
    images_per_split: int = 32,
    tolerance: float = 0.01,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Linear probe mIoU of every checkpoint below ``run_dir`` (labels: ``data``), and
    the chosen one against the last of its run, the best of all and random init.

    Returns ``{"chosen", "last", "best", "random_init"}`` (each ``{"run", "epoch",
    "miou"}``), ``"right"`` (chosen within ``tolerance`` of the best; None when a
    value is missing), ``"tolerance"`` and ``"images_per_split"``. ``options``:
    ``batch_size``, ``device``, ``linear_probe_kwargs`` of
    :func:`~dse_tune.evaluation.validate.score_checkpoint`.

    Raises:
        ValueError: no run with evaluations, or the chosen checkpoint is none of them.
    """
    from tqdm.auto import tqdm

    from dse_tune.degradation import peak
    from dse_tune.evaluation.validate import load_labelled_data, load_runs, random_init_baselines, score_checkpoint
    from dse_tune.checkpoints.tracked_run import checkpoint_loader

    runs, _, configs = load_runs(Path(run_dir))
    sizes, splits_by_size = load_labelled_data(runs, configs, data, None, images_per_split=images_per_split)
    scored = []  # (run, evaluation, checkpoint, miou)
    jobs = [(run, e, run.checkpoint_path(e)) for run in runs for e in run.evaluations]
    for run, evaluation, checkpoint in tqdm(jobs, desc="label check", unit="ckpt", disable=not progress):
        miou = None
        if checkpoint is not None and checkpoint.is_file():
            model = checkpoint_loader(run.path)(checkpoint, map_location=options.get("device", "cpu"))
            miou = score_checkpoint(model, splits_by_size[sizes[run.name]], label_free=False, **options)["miou"]
        scored.append((run, evaluation, checkpoint, miou))
    chosen = next((s for s in scored if _same_file(s[2], chosen_checkpoint)), None)
    if chosen is None:
        raise ValueError(f"the chosen checkpoint {chosen_checkpoint} is not a checkpoint of a run below {run_dir}")
    run = chosen[0]
    last = [s for s in scored if s[0] is run and s[3] is not None][-1:] or [chosen]
    best = peak([s[3] for s in scored])
    best_entry = scored[best.index] if best.index is not None else (None, None, None, None)
    baseline = random_init_baselines([run], configs, sizes, splits_by_size, **options)[run.name]
    check = {
        "chosen": _entry(run, chosen[1], chosen[3]),
        "last": _entry(run, last[0][1], last[0][3]),
        "best": _entry(best_entry[0], best_entry[1], best_entry[3]) if best_entry[0] else {"run": None, "epoch": None, "miou": None},
        "random_init": {"run": run.name, "epoch": None, "miou": baseline.get("miou")},
        "tolerance": tolerance,
        "images_per_split": images_per_split,
    }
    chosen_miou, best_miou = check["chosen"]["miou"], check["best"]["miou"]
    check["right"] = None if chosen_miou is None or best_miou is None else best_miou - chosen_miou <= tolerance
    return check


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def format_label_check(check: dict[str, Any]) -> str:
    """The label check as a small table and one verdict line (mIoU in points, 0-100)."""
    lines = [f"label check (linear probe mIoU, {check['images_per_split']} labelled images per split):"]
    for key, label in (("chosen", "chosen checkpoint"), ("last", "last of that trial"), ("best", "best of the sweep")):
        entry = check[key]
        where = f"{entry['run']}, epoch {entry['epoch']}" if entry["run"] is not None else "-"
        lines.append(f"  {label:<20} {_points(entry['miou']):>5}  {where}")
    random_init = check["random_init"]
    lines.append(f"  {'random init':<20} {_points(random_init['miou']):>5}  same architecture as {random_init['run']}")
    tolerance = 100 * check["tolerance"]
    chosen, best = check["chosen"]["miou"], check["best"]["miou"]
    if check["right"] is None:
        lines.append("the decision cannot be checked: a checkpoint could not be scored")
    else:
        gap = f"{100 * (chosen - best):+.1f}"
        verdict = "right" if check["right"] else "wrong"
        within = "within" if check["right"] else "more than"
        lines.append(
            f"the decision was {verdict}: the chosen checkpoint is {within} {tolerance:.1f} mIoU points "
            f"{'of' if check['right'] else 'below'} the best ({gap})"
        )
    return "\n".join(lines)
