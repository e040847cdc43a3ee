"""Validation with labels: do the label-free scores track dense quality?

For every checkpoint in the history of a run (or of every run of a sweep),
:func:`validate` computes on the same frozen dense tokens the label-free scores of the
evaluation split's images (DSE with its components and the monitor's seed, its
standardised series, RankMe and alpha-ReQ on tokens and pooled embeddings; beside the
DSE the monitor recorded, ``dse_monitored``: the selection signal) and the labelled
yardstick, the linear probe's mIoU (:mod:`dse_tune.evaluation.linear_probe`, fitted on
the train split). :mod:`dse_tune.evaluation.report` then correlates every score with
mIoU (per run and pooled) and sets the selected checkpoint beside the last and the best.

Steps, one function each: :func:`load_runs` and :func:`load_labelled_data` (load) ->
:func:`score_runs` (score) -> :func:`dse_tune.evaluation.report.build_report` (report)
-> :func:`write_report` (write ``validation.json`` and ``validation.png``, atomically).
The protocol and the JSON fields: ``docs/validation.md``; the command:
``dse-tune validate`` (:mod:`dse_tune.cli.validate`).

Top-level imports load no torch, scipy or matplotlib (``dse-tune --help`` stays fast).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.degradation import finite_or_none
from dse_tune.runs import COMPONENTS, CONFIG_FILE, HISTORY_FILE, load_sweep, read_config, relative_path

__all__ = [
    "SCORED_FIELDS",
    "VALIDATION_JSON",
    "VALIDATION_PNG",
    "dse_image_count",
    "load_labelled_data",
    "load_runs",
    "random_init_baselines",
    "score_checkpoint",
    "score_runs",
    "validate",
    "write_report",
]

VALIDATION_JSON = "validation.json"
VALIDATION_PNG = "validation.png"
#: Fields of a checkpoint row that are computed (None until then, or when they cannot be).
#: ``probe_train_loss`` is the linear probe's (the key is kept for existing reports).
SCORED_FIELDS = (
    "dse_images",
    "dse",
    *(f"dse_{name}" for name in COMPONENTS),
    "dse_class_relevance",
    "dse_standardized",
    "dse_monitored_standardized",
    "rankme_tokens",
    "rankme_pooled",
    "alpha_req_tokens",
    "alpha_req_tokens_r2",
    "alpha_req_pooled",
    "alpha_req_pooled_r2",
    "miou",
    "pixel_accuracy",
    "per_class_iou",
    "probe_train_loss",
    "problem",
)


def load_runs(run_dir: Path) -> tuple[list[Any], list[str], dict[str, dict[str, Any]]]:
    """The runs below ``run_dir`` with evaluations, a warning per run skipped, and each
    run's config (:func:`dse_tune.runs.read_config`: the monitor's settings)."""
    all_runs = load_sweep(run_dir)
    skipped = [f"run {r.name}: {r.problem or 'no evaluations'}; skipped" for r in all_runs if not r.evaluations]
    runs = [r for r in all_runs if r.evaluations]
    if not runs:
        raise ValueError(f"no run with DSE evaluations below {run_dir} (looked for {HISTORY_FILE})")
    configs = {run.name: read_config(run.path) if run.path is not None else dict(run.config) for run in runs}
    return runs, skipped, configs


def load_labelled_data(
    runs: Sequence[Any], configs: Mapping[str, Mapping[str, Any]], data: Any, image_size: Any, **split_options: Any
) -> tuple[dict[str, str], dict[str, Any]]:
    """Each run's probe image size (``image_size`` if given, else its config's
    ``probe_image_size``, else its ``image_size``) and the labelled splits at every size
    (:func:`dse_tune.evaluation.labelled_data.load_labelled_splits`). Sizes are keyed by
    their text: ``"32"`` (a square, as before), ``"96x128"`` or ``"native"``."""
    from dse_tune.data import probe_image_size
    from dse_tune.evaluation.labelled_data import load_labelled_splits
    from dse_tune.typed_config import image_size_key, parse_image_size

    sizes: dict[str, str] = {}
    splits_by_size: dict[str, Any] = {}
    for run in runs:
        try:
            size = parse_image_size(image_size) if image_size is not None else probe_image_size(configs[run.name])
        except ValueError as error:
            raise ValueError(f"run {run.name}: {CONFIG_FILE}: {error}; pass --image-size") from None
        if not isinstance(size, str) and size[0] == size[1]:
            size = size[0]  # a square keeps its old spelling (the report's key "32")
        key = image_size_key(size)
        if key not in splits_by_size:
            splits_by_size[key] = load_labelled_splits(data, image_size=size, **split_options)
        sizes[run.name] = key
    return sizes, splits_by_size


def dse_image_count(num_images: int, group_size: int = 8) -> int:
    """Images DSE scores out of ``num_images``: whole groups of ``group_size`` (the
    global k-means works on groups; a small last group cannot hold its clusters).

    Example:
        >>> dse_image_count(233), dse_image_count(5)
        (232, 5)
    """
    return num_images - num_images % group_size if num_images >= group_size else num_images


def _label_free_scores(eval_tokens: Any, dse_seed: int) -> tuple[dict[str, Any], list[str]]:
    """DSE (through the tolerant :func:`dse_tune.score_tokens`), RankMe and alpha-ReQ
    of the evaluation tokens; a score that cannot be computed is left out, with the reason."""
    from dse_tune.evaluation.rescore import attempt_score, tolerant_dse
    from dse_tune.metrics import alpha_req, rankme

    problems: list[str] = []
    count = dse_image_count(eval_tokens.shape[0])
    row: dict[str, Any] = {"dse_images": count}
    result = tolerant_dse(problems, eval_tokens[:count], seed=dse_seed)
    if result is not None:
        row["dse"] = result.score
        row.update({f"dse_{name}": getattr(result, name) for name in COMPONENTS})
        row["dse_class_relevance"] = result.result.class_relevance
    for layout, pool in (("tokens", False), ("pooled", True)):
        row[f"rankme_{layout}"] = attempt_score(problems, f"RankMe ({layout})", lambda: rankme(eval_tokens, pool=pool))
        fit = attempt_score(problems, f"alpha-ReQ ({layout})", lambda: alpha_req(eval_tokens, pool=pool))
        if fit is not None:
            row[f"alpha_req_{layout}"], row[f"alpha_req_{layout}_r2"] = fit.alpha, fit.r2
    return row, problems


def score_checkpoint(
    model: Any,
    splits: Any,
    *,
    dse_seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    linear_probe_kwargs: Mapping[str, Any] | None = None,
    label_free: bool = True,
) -> dict[str, Any]:
    """Label-free scores (evaluation images) and linear probe mIoU (train -> evaluation)
    of one model on :class:`~dse_tune.evaluation.labelled_data.LabelledSplits`
    (``label_free=False``: the linear probe's only): a flat dict of the
    :data:`SCORED_FIELDS` it computed, ``problem`` saying why a label-free score is
    missing. A failing linear probe raises.
    """
    from dse_tune.evaluation.linear_probe import evaluate_linear_probe, fit_linear_probe, frozen_tokens

    train_tokens, eval_tokens = frozen_tokens(model, (splits.train.images, splits.evaluation.images), device, batch_size)
    row, problems = _label_free_scores(eval_tokens, dse_seed) if label_free else ({}, [])
    linear_probe = fit_linear_probe(train_tokens, splits.train.masks, splits.num_classes, **dict(linear_probe_kwargs or {}))
    scores = evaluate_linear_probe(linear_probe, eval_tokens, splits.evaluation.masks)
    row.update(
        miou=scores.miou,
        pixel_accuracy=scores.pixel_accuracy,
        per_class_iou=list(scores.per_class_iou),
        probe_train_loss=linear_probe.train_loss,
        problem="; ".join(problems) or None,
    )
    return row


def _row(result: Any, out: Path) -> dict[str, Any]:
    """The row of one evaluation: what the run recorded, then the scores of its checkpoint
    (a missing or unusable checkpoint leaves them None and says why in ``problem``)."""
    evaluation, checkpoint = result.evaluation, result.checkpoint
    row: dict[str, Any] = {
        "run": result.run.name,
        "index": evaluation.index,
        "epoch": evaluation.epoch,
        "global_step": evaluation.global_step,
        "checkpoint": None if checkpoint is None else relative_path(checkpoint, out),
        "dse_monitored": finite_or_none(evaluation.dse),
        **{f"dse_monitored_{name}": finite_or_none(evaluation.components.get(name)) for name in COMPONENTS},
        **dict.fromkeys(SCORED_FIELDS),
        **(result.value or {}),
    }
    if result.problem:
        row["problem"] = result.problem
    row["seconds"] = round(result.seconds, 3)
    return row


def score_runs(
    runs: Sequence[Any],
    configs: Mapping[str, Mapping[str, Any]],
    sizes: Mapping[str, int],
    splits_by_size: Mapping[str, Any],
    out: Path,
    *,
    progress: bool = True,
    **options: Any,
) -> dict[str, list[dict[str, Any]]]:
    """One row per evaluation of every run (:func:`score_checkpoint` on its checkpoint),
    with a progress bar; a warning on stderr for each checkpoint that could not be scored.
    ``options``: ``batch_size``, ``device``, ``linear_probe_kwargs`` of :func:`score_checkpoint`.
    """
    from dse_tune.checkpoints.tracked_run import score_checkpoints

    def score(model: Any, run: Any) -> dict[str, Any]:
        return score_checkpoint(model, splits_by_size[sizes[run.name]], dse_seed=_dse_seed(configs[run.name]), **options)

    jobs = [(run, evaluation, run.checkpoint_path(evaluation)) for run in runs for evaluation in run.evaluations]
    rows_by_run: dict[str, list[dict[str, Any]]] = {run.name: [] for run in runs}
    for result in score_checkpoints(jobs, score, desc="validating", progress=progress,
                                    device=options.get("device", "cpu")):
        row = _row(result, out)
        if row.get("problem"):
            print(f"dse-tune validate: warning: {result.run.name} evaluation {result.evaluation.index}: "
                  f"{row['problem']}", file=sys.stderr)
        rows_by_run[result.run.name].append(row)
    return rows_by_run


#: Config fields that define the architecture a random-init baseline is built from (with
#: ``seed``, the seed of its random weights).
ARCHITECTURE_FIELDS = (
    "method", "backbone", "image_size", "patch_size", "embed_dim", "depth", "num_heads",
    "decoder_dim", "decoder_depth", "decoder_num_heads", "seed",
)


def random_init_baselines(
    runs: Sequence[Any],
    configs: Mapping[str, Mapping[str, Any]],
    sizes: Mapping[str, int],
    splits_by_size: Mapping[str, Any],
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Per run: the linear probe's scores of a randomly initialised model of the run's
    architecture (its config, weights drawn with the config's ``seed``), the floor every
    checkpoint's mIoU is read against. Runs of one architecture share one baseline.

    A run whose config cannot build a model gets ``{"miou": None, "problem": ...}``.
    ``options``: ``batch_size``, ``device``, ``linear_probe_kwargs`` of :func:`score_checkpoint`.
    """
    import torch

    from dse_tune.ssl.methods import build_module

    by_architecture: dict[str, dict[str, Any]] = {}
    baselines = {}
    for run in runs:
        config = dict(configs[run.name])
        seed = int(config.get("seed", 0) or 0)
        key = json.dumps([sizes[run.name], *(config.get(name) for name in ARCHITECTURE_FIELDS)], default=str)
        if key not in by_architecture:
            try:
                # A private RNG stream: the baseline's weights never depend on what ran before.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = build_module(config)
                row = score_checkpoint(model, splits_by_size[sizes[run.name]], dse_seed=_dse_seed(config), **options)
                by_architecture[key] = {"miou": row["miou"], "pixel_accuracy": row["pixel_accuracy"],
                                        "per_class_iou": row["per_class_iou"], "seed": seed, "problem": None}
            except Exception as error:  # noqa: BLE001 - the baseline is context, not the study
                by_architecture[key] = {"miou": None, "seed": seed,
                                        "problem": f"cannot build or score a random-init model: {type(error).__name__}: {error}"}
        baselines[run.name] = dict(by_architecture[key])
    return baselines


def _dse_seed(config: Mapping[str, Any]) -> int:
    """The seed the run's monitor gave DSE (its ``probe_seed``)."""
    return int(config.get("probe_seed", 0))


def write_report(report: Mapping[str, Any], out: Path, plot: bool = True) -> Path:
    """Write ``OUT/validation.json`` (and ``validation.png`` with ``plot``), atomically."""
    from dse_tune.atomic import atomic_write_json
    from dse_tune.evaluation.plot import plot_validation

    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(out / VALIDATION_JSON, report, allow_nan=False)
    if plot:
        plot_validation(report, out / VALIDATION_PNG)
    return path


def validate(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_split: str = "train",
    eval_split: str = "test",
    images_per_split: int | None = None,
    num_classes: int | None = None,
    image_size: Any = None,
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    batch_size: int = 64,
    device: str = "cpu",
    linear_probe_kwargs: Mapping[str, Any] | None = None,
    plot: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every checkpoint of the run(s) below ``run_dir`` (a run or sweep folder);
    write ``OUT/validation.json`` (and ``validation.png`` with ``plot``); return the report.

    Args:
        data, train_split, eval_split, images_per_split, num_classes: the labelled images
            (see :func:`dse_tune.evaluation.labelled_data.load_labelled_splits`).
        image_size: ``N``, ``HxW`` or ``"native"`` (default: each run's probe image size).
        window, top: the selection's candidate rule.
        linear_probe_kwargs: :func:`dse_tune.evaluation.linear_probe.fit_linear_probe`
            settings; leave None for the documented protocol.

    Raises:
        ValueError / FileNotFoundError: no run with evaluations, unusable data.
    """
    run_dir, out = Path(run_dir), Path(out)
    runs, skipped, configs = load_runs(run_dir)
    sizes, splits_by_size = load_labelled_data(
        runs, configs, data, image_size, train_split=train_split, eval_split=eval_split,
        images_per_split=images_per_split, num_classes=num_classes,
    )
    options = {"batch_size": batch_size, "device": device, "linear_probe_kwargs": linear_probe_kwargs}
    rows_by_run = score_runs(runs, configs, sizes, splits_by_size, out, progress=progress, **options)
    baselines = random_init_baselines(runs, configs, sizes, splits_by_size, **options)
    from dse_tune.evaluation.report import build_report

    report = build_report(
        run_dir, runs, rows_by_run, splits_by_size, skipped,
        dse_seeds={name: _dse_seed(config) for name, config in configs.items()}, window=window, top=top,
        linear_probe_kwargs=linear_probe_kwargs, baselines=baselines,
    )
    for warning in report["reliability_warnings"]:
        print(f"dse-tune validate: warning: {warning}", file=sys.stderr)
    write_report(report, out, plot)
    return report
