"""The label check of a label-free decision: was the chosen checkpoint a good one?

Where labels exist (the demo's synthetic scenes have masks), the linear probe's mIoU of
the chosen checkpoint is set beside the last checkpoint of its run, DSE's pick in that
run (when the decision kept another; both as :func:`dse_tune.decision.run_choice`, the
selector's own function, gives them), the best checkpoint of the sweep (an oracle) and
a random-init model of the same architecture, each difference with its paired-bootstrap
standard error (:mod:`dse_tune.evaluation.few_label`). The decision is right when the
chosen checkpoint is within ``tolerance`` mIoU of the best. When the selector kept the
last checkpoint because DSE's preference was within the noise, the check also says
whether the labels agree: no degradation beyond ``tolerance`` from DSE's pick to the last.

Example:
    >>> check = {"chosen": {"run": "a", "epoch": 9, "miou": 0.30, "se": 0.004},
    ...          "last": {"run": "a", "epoch": 14, "miou": 0.28, "se": 0.005},
    ...          "best": {"run": "b", "epoch": 12, "miou": 0.305, "se": 0.004},
    ...          "random_init": {"run": "a", "epoch": None, "miou": 0.2},
    ...          "gap": {"difference": -0.005, "se": 0.003}, "right": True, "tolerance": 0.01,
    ...          "images_per_split": 32}
    >>> print(format_label_check(check))  # doctest: +NORMALIZE_WHITESPACE
    label check (linear probe mIoU in points, +- standard error over the 32 scored images):
      chosen checkpoint     30.0 +- 0.4  a, epoch 9
      last of that trial    28.0 +- 0.5  a, epoch 14
      best of the sweep     30.5 +- 0.4  b, epoch 12
      random init           20.0         same architecture as a
    the decision was right: the chosen checkpoint is within 1.0 mIoU points of the best (-0.5 +- 0.3)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dse_tune.decision import KEPT_LATEST
from dse_tune.degradation import finite_or_none, peak
from dse_tune.evaluation.few_label import (
    FewLabelScores, bootstrap_mious, bootstrap_standard_error, in_points, miou_of, per_image_confusions,
)

__all__ = ["check_choice", "format_label_check"]


def _same_file(a: Any, b: Any) -> bool:
    return a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b)


def _entry(scored: tuple | None, spread: Mapping[str, float]) -> dict[str, Any]:
    if scored is None:
        return {"run": None, "epoch": None, "miou": None, "se": None}
    run, evaluation, checkpoint, miou = scored
    return {"run": run.name, "epoch": getattr(evaluation, "epoch", None), "miou": miou,
            "se": finite_or_none(spread.get(str(checkpoint)))}


def _score_all(runs: list, sizes: Mapping, splits_by_size: Mapping, progress: bool, options: Mapping) -> tuple:
    """(run, evaluation, checkpoint, mIoU) of every checkpoint on disk, and the per-image
    confusions of each scored one (keyed by path)."""
    from dse_tune.checkpoints.tracked_run import score_checkpoints

    device = options.get("device", "cpu")

    def score(model: Any, run: Any) -> Any:
        splits = splits_by_size[sizes[run.name]]
        return per_image_confusions(
            model, splits.train, splits.evaluation, splits.num_classes, device=device,
            batch_size=options.get("batch_size", 64), **dict(options.get("linear_probe_kwargs") or {}),
        )

    scored, per_image = [], {}
    jobs = [(run, e, run.checkpoint_path(e)) for run in runs for e in run.evaluations]
    for run, evaluation, checkpoint, confusions, problem, _ in score_checkpoints(
        jobs, score, desc="label check", progress=progress, device=device
    ):
        if problem and checkpoint is not None:  # a checkpoint on record that could not be probed
            print(f"dse-tune label check: warning: {run.name}: {problem}", file=sys.stderr)
        miou = None
        if confusions is not None:
            per_image[str(checkpoint)] = confusions
            miou = float(miou_of(confusions.sum(0)))
        scored.append((run, evaluation, checkpoint, finite_or_none(miou)))
    return scored, per_image


def _difference(per_image: Mapping[str, Any], a: tuple | None, b: tuple | None) -> dict[str, float | None]:
    """mIoU of ``a`` minus ``b`` and its paired-bootstrap standard error."""
    if a is None or b is None or a[3] is None or b[3] is None:
        return {"difference": None, "se": None}
    difference, se = FewLabelScores({}, 0, per_image=dict(per_image)).difference(a[2], b[2])
    return {"difference": difference, "se": finite_or_none(se)}


def check_choice(
    run_dir: str | os.PathLike,
    chosen_checkpoint: str | os.PathLike,
    data: str | os.PathLike = "synthetic",
    *,
    images_per_split: int = 32,
    tolerance: float = 0.01,
    progress: bool = True,
    decision: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Linear probe mIoU of every checkpoint below ``run_dir`` (labels: ``data``), the
    chosen one against the last of its run, DSE's pick there, the best of all and random init.

    Returns ``{"chosen", "last", "dse_pick", "best", "random_init"}`` (each ``{"run",
    "epoch", "miou", "se"}``; ``dse_pick`` None when it is the chosen one), ``"gap"``
    (chosen minus best, with its standard error), ``"right"`` (chosen within ``tolerance``
    of the best; None when a value is missing), ``"declared"`` (the selector's reason when
    it kept the last checkpoint over DSE's pick), ``"labels_agree"`` (with ``declared``:
    DSE's pick at most ``tolerance`` above the last by labels), ``"run_choice"`` (the
    run's own noise-aware reason where other values chose another checkpoint),
    ``"tolerance"`` and ``"images_per_split"``. ``decision``: the ``selection.json``
    content; ``options``: those of :func:`~dse_tune.evaluation.validate.score_checkpoint`.
    Raises ValueError when no run has evaluations or the chosen checkpoint is none of them.
    """
    from dse_tune.decision import run_choice
    from dse_tune.evaluation.validate import load_labelled_data, load_runs, random_init_baselines

    runs, _, configs = load_runs(Path(run_dir))
    sizes, splits_by_size = load_labelled_data(runs, configs, data, None, images_per_split=images_per_split)
    scored, per_image = _score_all(runs, sizes, splits_by_size, progress, options)
    chosen = next((s for s in scored if _same_file(s[2], chosen_checkpoint)), None)
    if chosen is None:
        raise ValueError(f"the chosen checkpoint {chosen_checkpoint} is not a checkpoint of a run below {run_dir}")
    run = chosen[0]
    own = [s for s in scored if s[0] is run]
    # The selector's own latest and DSE pick, with the candidate rule the decision used.
    rule = {key: (decision or {})[key] for key in ("window", "top") if key in (decision or {})}
    choice = run_choice(run, **rule)
    last = own[choice.latest] if choice.latest is not None else chosen
    pick = own[choice.best] if choice.best is not None and own[choice.best] is not chosen else None
    best = peak([s[3] for s in scored])
    best_entry = scored[best.index] if best.index is not None else None
    samples = bootstrap_mious(per_image) if per_image else {}
    spread = {key: bootstrap_standard_error(value, per_image[key].shape[0]) for key, value in samples.items()}
    baseline = random_init_baselines([run], configs, sizes, splits_by_size, **options)[run.name]
    verdict = (decision or {}).get("reliability")
    declared = (decision or {}).get("reliability_reason") if verdict in KEPT_LATEST and last is chosen else None
    check = {
        "chosen": _entry(chosen, spread),
        "last": _entry(last, spread),
        "dse_pick": _entry(pick, spread) if pick is not None else None,
        "best": _entry(best_entry, spread),
        "random_init": {"run": run.name, "epoch": None, "miou": baseline.get("miou")},
        "gap": _difference(per_image, chosen, best_entry),
        "declared": declared,
        "tolerance": tolerance,
        "images_per_split": images_per_split,
    }
    chosen_miou, best_miou = check["chosen"]["miou"], check["best"]["miou"]
    check["right"] = None if chosen_miou is None or best_miou is None else best_miou - chosen_miou <= tolerance
    # Where other values (rescored, few-label) overrode the run's noise-aware choice, say what it was.
    own_choice = own[choice.chosen] if choice.chosen is not None else None
    check["run_choice"] = choice.reason if declared is None and own_choice is not None and own_choice is not chosen else None
    check["labels_agree"] = None
    if declared is not None and pick is not None and pick[3] is not None and last[3] is not None:
        check["pick_vs_last"] = _difference(per_image, pick, last)
        check["labels_agree"] = pick[3] - last[3] <= tolerance
    return check


def _with_se(entry: Mapping[str, Any]) -> str:
    se = entry.get("se")
    return f"{in_points(entry['miou']):>5}" + (f" +- {in_points(se)}" if se is not None else " " * 7)


def _signed(gap: Mapping[str, Any]) -> str:
    if gap.get("difference") is None:
        return "n/a"
    se = gap.get("se")
    return f"{100 * gap['difference']:+.1f}" + (f" +- {in_points(se)}" if se is not None else "")


def format_label_check(check: Mapping[str, Any]) -> str:
    """The label check as a small table and its verdict lines (mIoU in points, 0-100)."""
    lines = [f"label check (linear probe mIoU in points, +- standard error over the {check['images_per_split']} "
             "scored images):"]
    rows = [("chosen", "chosen checkpoint"), ("last", "last of that trial"), ("dse_pick", "DSE's pick (not kept)"),
            ("best", "best of the sweep")]
    for key, label in rows:
        entry = check.get(key)
        if entry is None:
            continue
        where = f"{entry['run']}, epoch {entry['epoch']}" if entry["run"] is not None else "-"
        lines.append(f"  {label:<21} {_with_se(entry)}  {where}")
    random_init = check["random_init"]
    lines.append(f"  {'random init':<21} {in_points(random_init['miou']):>5}{' ' * 7}  same architecture as {random_init['run']}")
    tolerance = 100 * check["tolerance"]
    gap = _signed(check.get("gap") or {"difference": None})
    if check.get("declared"):
        lines.append(f"the selector said: {check['declared']}")
    elif check.get("run_choice"):
        lines.append(f"the trial's own DSE rule, overridden by the values that chose: {check['run_choice']}")
    if check["right"] is None:
        lines.append("the decision cannot be checked: a checkpoint could not be scored")
    elif check["right"]:
        lines.append(f"the decision was right: the chosen checkpoint is within {tolerance:.1f} mIoU points of the best ({gap})")
    elif check.get("declared") and check.get("labels_agree"):
        pick_vs_last = _signed(check.get("pick_vs_last") or {"difference": None})
        lines.append(
            f"no reliable degradation: kept the last checkpoint, and the labels agree (DSE's pick minus the last: "
            f"{pick_vs_last} points, not more than {tolerance:.1f}); the best of the sweep is still more than "
            f"{tolerance:.1f} points above the chosen one ({gap})"
        )
    else:
        lines.append(f"the decision was wrong: the chosen checkpoint is more than {tolerance:.1f} mIoU points below "
                     f"the best ({gap})")
    return "\n".join(lines)
