"""``dse-tune validate``: do the label-free scores track dense quality? (labels needed)

For every checkpoint in the history of a pretraining run (or of every run of a sweep)
this computes, on the same frozen dense tokens:

- label-free scores on the evaluation split's images (no labels): DSE with its
  components (the run monitor's settings and seed, ``probe_seed`` from the run's
  ``config.json``), the run-level standardised DSE series
  (:func:`dse_tune.metrics.standardize_dse`), RankMe and alpha-ReQ on the patch tokens
  and on the mean-pooled image embeddings; plus the DSE the monitor recorded during
  training (``dse_monitored``, on the run's own probe images: the selection signal);
- the labelled yardstick: mIoU of the linear probe of :mod:`dse_tune.probe`, fitted on
  the train split and scored on the evaluation split.

Then Kendall's tau and Spearman's rho of every score against the probe mIoU, per run
and pooled over runs, and what the paper's selection buys: the mIoU of the
DSE-selected checkpoint (top candidate of
:func:`dse_tune.selection.candidate_indices` on the monitored DSE history) against the
last checkpoint and the best one (an oracle that needs labels).

Files written to ``OUT`` (atomically): ``validation.json`` and ``validation.png``
(per run, min-max normalised mIoU and DSE over epochs, candidates marked). The
protocol and the JSON fields are described in ``docs/validation.md``.

Example::

    dse-tune validate runs/dino --data ../shared/data/camvid --out runs/dino/validation
    dse-tune validate runs/sweep --data synthetic --out runs/sweep/validation

Top-level imports are standard-library only; torch, scipy and matplotlib are imported
inside the functions (``dse-tune --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SCORE_NAMES",
    "SYNTHETIC_VALIDATION_SEED",
    "VALIDATION_JSON",
    "VALIDATION_PNG",
    "LabelledSplits",
    "correlations",
    "load_labelled_splits",
    "plot_validation",
    "score_checkpoint",
    "selection_summary",
    "validate",
]

VALIDATION_JSON = "validation.json"
VALIDATION_PNG = "validation.png"
CONFIG_JSON = "config.json"
#: Scene family of the synthetic validation images: a seed no pretraining run uses by
#: default, so the probe's images were never trained on (same distribution: the seed
#: only changes the random draws of positions, sizes and colours).
SYNTHETIC_VALIDATION_SEED = 1_000_003
#: Synthetic scenes are rendered at this size (``open_dataset``'s default, the size
#: pretraining renders them at), then resized to the model's input like any image.
SYNTHETIC_RENDER_SIZE = 64
DEFAULT_SYNTHETIC_IMAGES = 64
#: Label-free scores compared with the probe mIoU (higher-is-better or not, tau keeps
#: the sign: the intra-cluster terms and alpha-ReQ are expected to correlate negatively).
SCORE_NAMES = (
    "dse",
    "dse_standardized",
    "dse_monitored",
    "dse_monitored_standardized",
    "dse_class_relevance",
    "dse_inter",
    "dse_intra_image",
    "dse_intra_batch",
    "dse_dim",
    "rankme_tokens",
    "rankme_pooled",
    "alpha_req_tokens",
    "alpha_req_pooled",
)
COMPONENTS = ("inter", "intra_image", "intra_batch", "dim")
#: Fields of a checkpoint row that are computed (None until then, or when they cannot be).
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


# --------------------------------------------------------------------------- data


@dataclass
class LabelledSplits:
    """The probe's images and masks at one input size.

    Attributes:
        train, evaluation: :class:`dse_tune.ssl.data.ProbeSet` with masks.
        num_classes: classes of the probe.
        num_classes_inferred: True when read from the masks (max label + 1).
        description: JSON-ready description (sources, sizes, indices).
    """

    train: Any
    evaluation: Any
    num_classes: int
    num_classes_inferred: bool
    description: dict[str, Any]


class _SceneRange:
    """Scenes ``start .. start + count - 1`` of a :class:`SyntheticScenes` family as a dataset."""

    has_masks = True

    def __init__(self, scenes: Any, start: int, count: int) -> None:
        self.scenes, self.start, self.count = scenes, start, count

    def __len__(self) -> int:
        return self.count

    def load_image(self, index: int) -> Any:
        return self.scenes.load_image(self.start + index)

    def load_mask(self, index: int) -> Any:
        return self.scenes.load_mask(self.start + index)

    def describe(self) -> str:
        return (
            f"synthetic scenes {self.start}..{self.start + self.count - 1} of seed {self.scenes.seed} "
            f"({self.scenes.image_size}px)"
        )


def load_labelled_splits(
    data: str | os.PathLike,
    *,
    image_size: int,
    train_split: str = "train",
    eval_split: str = "test",
    probe_images: int | None = None,
    num_classes: int | None = None,
) -> LabelledSplits:
    """Train and evaluation images with masks, resized and centre-cropped to ``image_size``
    exactly as a monitoring probe set (:func:`dse_tune.ssl.data.build_probe_set`).

    Args:
        data: a folder with ``SPLIT/images`` + ``SPLIT/masks`` (255 = ignore), or
            ``"synthetic"``: scenes ``0..n-1`` (train) and ``n..2n-1`` (evaluation) of
            the family :data:`SYNTHETIC_VALIDATION_SEED`, ``n = probe_images`` (default
            64); the split names are then unused.
        image_size: the models' input size.
        train_split, eval_split: split folders of ``data``.
        probe_images: at most this many images per split, evenly spread over it (a
            folder's images are sorted, so the first ones would be one video sequence);
            None takes every image.
        num_classes: None infers max label + 1 from the masks of both splits.
    """
    from dse_tune.ssl.data import DatasetError, SyntheticScenes, build_probe_set, open_dataset

    if probe_images is not None and (isinstance(probe_images, bool) or not isinstance(probe_images, int) or probe_images < 1):
        raise ValueError(f"probe_images must be a positive integer or None, got {probe_images!r}")
    if str(data) == "synthetic":
        count = DEFAULT_SYNTHETIC_IMAGES if probe_images is None else probe_images
        scenes = SyntheticScenes(num_images=2 * count, image_size=SYNTHETIC_RENDER_SIZE, seed=SYNTHETIC_VALIDATION_SEED)
        train_data, eval_data = _SceneRange(scenes, 0, count), _SceneRange(scenes, count, count)
        known_classes = SyntheticScenes.num_classes
    else:
        try:
            train_data = open_dataset(data, splits=train_split)
            eval_data = open_dataset(data, splits=eval_split)
        except DatasetError as error:
            raise ValueError(f"--data {data}: {error}") from None
        for split, dataset in ((train_split, train_data), (eval_split, eval_data)):
            if not dataset.has_masks:
                raise ValueError(
                    f"split {split!r} of {data} has no masks: the probe needs {split}/masks/NAME.png next to "
                    f"{split}/images/NAME.png (8-bit class index, 255 = ignore)"
                )
        known_classes = None

    sets = {}
    for role, dataset in (("train", train_data), ("evaluation", eval_data)):
        size = len(dataset) if probe_images is None else min(probe_images, len(dataset))
        sets[role] = build_probe_set(dataset, size=size, image_size=image_size)
    train, evaluation = sets["train"], sets["evaluation"]

    labels = [int(m[m != 255].max()) for m in (train.masks, evaluation.masks) if bool((m != 255).any())]
    if not labels:
        raise ValueError(f"the masks of {data} have no labelled pixel (all 255) at image size {image_size}")
    inferred = num_classes is None
    if inferred:
        num_classes = known_classes if known_classes is not None else max(labels) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if max(labels) >= num_classes:
        raise ValueError(
            f"the masks of {data} hold label {max(labels)} but num_classes is {num_classes}; "
            "pass --num-classes larger than every label (255 = ignore)"
        )
    synthetic = str(data) == "synthetic"

    def describe(role: str, probe_set: Any, dataset: Any, split: str) -> dict[str, Any]:
        # Synthetic indices are scene numbers of the validation family; folder indices
        # are positions in the split's sorted file list.
        offset = dataset.start if synthetic else 0
        return {
            "source": probe_set.source,
            "split": None if synthetic else split,
            "images": len(probe_set),
            "indices": [offset + i for i in probe_set.indices],
        }

    description = {
        "data": str(data),
        "train": describe("train", train, train_data, train_split),
        "evaluation": describe("evaluation", evaluation, eval_data, eval_split),
        "image_size": image_size,
        "num_classes": num_classes,
        "num_classes_inferred": inferred,
    }
    return LabelledSplits(train, evaluation, int(num_classes), inferred, description)


# --------------------------------------------------------------------- scoring


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def dse_image_count(num_images: int, group_size: int = 8) -> int:
    """Images DSE scores out of ``num_images``: whole groups of ``group_size`` (the
    global k-means works on groups; a small last group cannot hold its clusters)."""
    return num_images - num_images % group_size if num_images >= group_size else num_images


def score_checkpoint(
    model: Any,
    splits: LabelledSplits,
    *,
    dse_seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    probe_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Label-free scores (evaluation images) and probe mIoU (train -> evaluation) of one model.

    Returns a flat dict: ``dse`` and the components, ``dse_images``, ``rankme_tokens``,
    ``rankme_pooled``, ``alpha_req_tokens``, ``alpha_req_pooled`` (and their R^2),
    ``miou``, ``pixel_accuracy``, ``per_class_iou``, ``probe_train_loss`` and
    ``problem`` (why a label-free score is missing, else None). A failing probe raises.
    """
    import torch

    from dse_tune.features import dense_tokens_batched
    from dse_tune.metrics import alpha_req, dse, rankme
    from dse_tune.probe import evaluate_probe, fit_linear_probe

    if isinstance(model, torch.nn.Module):
        model.eval()
    train_tokens = dense_tokens_batched(model, splits.train.images.to(device), batch_size=batch_size).float().cpu()
    eval_tokens = dense_tokens_batched(model, splits.evaluation.images.to(device), batch_size=batch_size).float().cpu()

    row: dict[str, Any] = {}
    problems = []
    count = dse_image_count(eval_tokens.shape[0])
    row["dse_images"] = count
    try:
        result = dse(eval_tokens[:count], seed=dse_seed)
        row["dse"] = result.score
        row.update({f"dse_{name}": getattr(result, name) for name in COMPONENTS})
        row["dse_class_relevance"] = result.class_relevance
    except (ValueError, FloatingPointError) as error:
        problems.append(f"DSE: {error}")
    for layout, pool in (("tokens", False), ("pooled", True)):
        try:
            row[f"rankme_{layout}"] = rankme(eval_tokens, pool=pool)
        except ValueError as error:
            problems.append(f"RankMe ({layout}): {error}")
        try:
            fit = alpha_req(eval_tokens, pool=pool)
            row[f"alpha_req_{layout}"], row[f"alpha_req_{layout}_r2"] = fit.alpha, fit.r2
        except ValueError as error:
            problems.append(f"alpha-ReQ ({layout}): {error}")

    probe = fit_linear_probe(train_tokens, splits.train.masks, splits.num_classes, **dict(probe_kwargs or {}))
    scores = evaluate_probe(probe, eval_tokens, splits.evaluation.masks)
    row.update(
        miou=scores.miou,
        pixel_accuracy=scores.pixel_accuracy,
        per_class_iou=list(scores.per_class_iou),
        probe_train_loss=probe.train_loss,
        problem="; ".join(problems) or None,
    )
    return row


def _tau_and_rho(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Kendall's tau-b and Spearman's rho with p-values; None when undefined (fewer than
    2 pairs, or a constant series)."""
    from scipy import stats

    undefined = {"kendall_tau": None, "kendall_p": None, "spearman": None, "spearman_p": None}
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(x, y)
        rho = stats.spearmanr(x, y)
    return {
        "kendall_tau": _finite(tau.statistic),
        "kendall_p": _finite(tau.pvalue),
        "spearman": _finite(rho.statistic),
        "spearman_p": _finite(rho.pvalue),
    }


def correlations(rows: Sequence[Mapping[str, Any]], scores: Sequence[str] = SCORE_NAMES, target: str = "miou") -> dict[str, dict[str, Any]]:
    """Per score: Kendall's tau, Spearman's rho (with p-values) and the number of
    checkpoints ``n`` over the rows where both the score and ``target`` are finite."""
    table = {}
    for name in scores:
        pairs = [(_finite(r.get(name)), _finite(r.get(target))) for r in rows]
        pairs = [(s, t) for s, t in pairs if s is not None and t is not None]
        table[name] = {**_tau_and_rho([s for s, _ in pairs], [t for _, t in pairs]), "n": len(pairs)}
    return table


def _point(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"epoch": None, "index": None, "miou": None, "dse_monitored": None}
    return {
        "epoch": row.get("epoch"),
        "index": row.get("index"),
        "miou": _finite(row.get("miou")),
        "dse_monitored": _finite(row.get("dse_monitored")),
    }


def selection_summary(monitored: Sequence[float], rows: Sequence[Mapping[str, Any]], *, window: int = 2, top: int | None = 3) -> dict[str, Any]:
    """The paper's selection against the last and the best (oracle) checkpoint of one run.

    Args:
        monitored: the run's monitored DSE history, one value per evaluation.
        rows: one row per evaluation (same order) with ``epoch``, ``index`` and
            ``miou`` (None where the checkpoint could not be probed).

    Returns:
        ``{"selected", "last", "best", "best_candidate", "candidates", "gain_vs_last",
        "gap_to_best"}``: ``selected`` is the top candidate of ``candidate_indices``;
        ``last`` the last probed checkpoint; ``best`` the highest mIoU;
        ``best_candidate`` the highest mIoU among the candidates.
    """
    from dse_tune.selection import candidate_indices

    candidates = candidate_indices(monitored, window=window, top=top)
    probed = [r for r in rows if _finite(r.get("miou")) is not None]
    selected = rows[candidates[0]] if candidates else None
    last = probed[-1] if probed else None
    best = max(probed, key=lambda r: r["miou"]) if probed else None  # max keeps the first of ties
    candidate_rows = [rows[i] for i in candidates]
    probed_candidates = [r for r in candidate_rows if _finite(r.get("miou")) is not None]
    best_candidate = max(probed_candidates, key=lambda r: r["miou"]) if probed_candidates else None
    selected_miou = _point(selected)["miou"]

    def difference(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {
        "selected": _point(selected),
        "last": _point(last),
        "best": _point(best),
        "best_candidate": _point(best_candidate),
        "candidates": [_point(r) for r in candidate_rows],
        "gain_vs_last": difference(selected_miou, _point(last)["miou"]),
        "gap_to_best": difference(_point(best)["miou"], selected_miou),
        "window": window,
        "top": top,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def _aggregate_selection(per_run: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A sweep's selection: per-run selections averaged over the runs that have one."""
    selections = [r["selection"] for r in per_run.values() if r["selection"]["selected"]["miou"] is not None]
    if len(per_run) == 1:
        return next(iter(per_run.values()))["selection"]

    def mean_of(key: str) -> dict[str, Any]:
        return {"epoch": None, "index": None, "miou": _mean([s[key]["miou"] for s in selections])}

    return {
        "selected": mean_of("selected"),
        "last": mean_of("last"),
        "best": mean_of("best"),
        "best_candidate": mean_of("best_candidate"),
        "gain_vs_last": _mean([s["gain_vs_last"] for s in selections]),
        "gap_to_best": _mean([s["gap_to_best"] for s in selections]),
        "aggregate": f"mean over the {len(selections)} run(s) with a probed selected checkpoint",
    }


# ----------------------------------------------------------------------- driver


def _run_config(run: Any) -> dict[str, Any]:
    """The run's ``config.json`` (the monitor's settings), else the history's copy."""
    if run.path is not None and (run.path / CONFIG_JSON).is_file():
        try:
            return json.loads((run.path / CONFIG_JSON).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read {run.path / CONFIG_JSON}: {error}") from None
    return dict(run.config)


def _relative(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:  # another drive (Windows)
        return str(Path(path).absolute())


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def validate(
    run_dir: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_split: str = "train",
    eval_split: str = "test",
    probe_images: int | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    window: int = 2,
    top: int | None = 3,
    batch_size: int = 64,
    device: str = "cpu",
    probe_kwargs: Mapping[str, Any] | None = None,
    plot: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every checkpoint of the run(s) below ``run_dir``; write ``OUT/validation.json``
    (and ``validation.png``); return the report (the JSON's content).

    Args:
        run_dir: one run folder or a sweep folder (every ``dse_history.json`` below it).
        data, train_split, eval_split, probe_images, num_classes: the labelled images
            (see :func:`load_labelled_splits`).
        image_size: the models' input size (default: each run's ``image_size``).
        window, top: the selection's candidate rule (the selector's defaults).
        batch_size, device: feature extraction.
        probe_kwargs: :func:`dse_tune.probe.fit_linear_probe` settings; leave None for
            the documented protocol.
        plot, progress: draw ``validation.png``; show a progress bar over checkpoints.

    Raises:
        ValueError / FileNotFoundError: no run with evaluations, unusable data.
    """
    from dse_tune.atomic import atomic_write_text
    from dse_tune.metrics import standardize_dse
    from dse_tune.probe import DEFAULT_STEPS, DEFAULT_WEIGHT_DECAY
    from dse_tune.selection import load_sweep
    from dse_tune.ssl.methods import load_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    all_runs = load_sweep(run_dir)
    warnings_list = [f"run {r.name}: {r.problem or 'no evaluations'}; skipped" for r in all_runs if not r.evaluations]
    runs = [r for r in all_runs if r.evaluations]
    if not runs:
        raise ValueError(f"no run with DSE evaluations below {run_dir} (looked for dse_history.json)")
    configs = {run.name: _run_config(run) for run in runs}

    splits_by_size: dict[int, LabelledSplits] = {}
    jobs = []
    for run in runs:
        size = image_size or configs[run.name].get("image_size")
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"run {run.name}: config.json has no image_size; pass --image-size")
        if size not in splits_by_size:
            splits_by_size[size] = load_labelled_splits(
                data,
                image_size=size,
                train_split=train_split,
                eval_split=eval_split,
                probe_images=probe_images,
                num_classes=num_classes,
            )
        jobs.extend((run, position, size) for position in range(len(run.evaluations)))

    from tqdm.auto import tqdm

    rows_by_run: dict[str, list[dict[str, Any]]] = {run.name: [] for run in runs}
    for run, position, size in tqdm(jobs, desc="validating", unit="ckpt", disable=not progress):
        evaluation = run.evaluations[position]
        checkpoint = run.checkpoint_path(evaluation)
        row: dict[str, Any] = {
            "run": run.name,
            "index": evaluation.index,
            "epoch": evaluation.epoch,
            "global_step": evaluation.global_step,
            "checkpoint": None if checkpoint is None else _relative(checkpoint, out),
            "dse_monitored": _finite(evaluation.dse),
            **{f"dse_monitored_{name}": _finite(evaluation.components.get(name)) for name in COMPONENTS},
            **dict.fromkeys(SCORED_FIELDS),
        }
        started = time.perf_counter()
        if checkpoint is None:
            row["problem"] = "the evaluation has no checkpoint"
        elif not checkpoint.is_file():
            row["problem"] = f"checkpoint {checkpoint} does not exist"
        else:
            try:
                model = load_checkpoint(checkpoint, map_location=device)
                row.update(
                    score_checkpoint(
                        model,
                        splits_by_size[size],
                        dse_seed=int(configs[run.name].get("probe_seed", 0)),
                        batch_size=batch_size,
                        device=device,
                        probe_kwargs=probe_kwargs,
                    )
                )
            except Exception as error:  # noqa: BLE001 - one bad checkpoint must not stop the study
                row["problem"] = f"cannot score {checkpoint}: {type(error).__name__}: {error}"
        row["seconds"] = round(time.perf_counter() - started, 3)
        if row.get("problem"):
            print(f"dse-tune validate: warning: {run.name} evaluation {evaluation.index}: {row['problem']}", file=sys.stderr)
        rows_by_run[run.name].append(row)

    per_run: dict[str, dict[str, Any]] = {}
    for run in runs:
        rows = rows_by_run[run.name]
        standardization = {}
        for prefix, target in (("dse_", "dse_standardized"), ("dse_monitored_", "dse_monitored_standardized")):
            complete = [r for r in rows if all(_finite(r.get(prefix + c)) is not None for c in COMPONENTS)]
            if complete:
                series = standardize_dse([{c: r[prefix + c] for c in COMPONENTS} for r in complete])
                for r, value in zip(complete, series.standardized):
                    r[target] = value
                standardization[target] = {"class_relevance_std": series.class_relevance_std, "dim_std": series.dim_std}
        selection = selection_summary(run.dse, rows, window=window, top=top)
        candidates = {c["index"] for c in selection["candidates"]}
        for r in rows:
            r["candidate"] = r["index"] in candidates
            r["selected"] = r["index"] == selection["selected"]["index"]
        table = correlations(rows)
        per_run[run.name] = {
            "path": str(run.path) if run.path is not None else None,
            "beta": run.beta,
            "evaluations": len(rows),
            "probed": sum(1 for r in rows if _finite(r.get("miou")) is not None),
            "dse_seed": int(configs[run.name].get("probe_seed", 0)),
            "kendall_tau": {name: v["kendall_tau"] for name, v in table.items()},
            "spearman": {name: v["spearman"] for name, v in table.items()},
            "correlations": table,
            "standardization": standardization,
            "selection": selection,
        }

    all_rows = [r for run in runs for r in rows_by_run[run.name]]
    pooled = correlations(all_rows)
    mean_tau = {
        name: _mean([per_run[run.name]["kendall_tau"][name] for run in runs]) for name in SCORE_NAMES
    }
    settings = dict(probe_kwargs or {})
    report = {
        "run_dir": str(run_dir),
        "runs": [run.name for run in runs],
        "kendall_tau": {name: v["kendall_tau"] for name, v in pooled.items()},
        "spearman": {name: v["spearman"] for name, v in pooled.items()},
        "kendall_tau_mean_over_runs": mean_tau,
        "correlations": pooled,
        "selection": _aggregate_selection(per_run),
        "per_run": per_run,
        "checkpoints": all_rows,
        "data": {str(size): splits.description for size, splits in splits_by_size.items()},
        "protocol": {
            "probe": {
                "optimizer": settings.get("optimizer", "lbfgs"),
                "steps": settings.get("steps", DEFAULT_STEPS[settings.get("optimizer", "lbfgs")]),
                "weight_decay": settings.get("weight_decay", DEFAULT_WEIGHT_DECAY),
                **settings,
                "standardization": "per channel, train-token statistics",
                "upsampling": "bilinear, align_corners=False, to the mask resolution",
                "ignore_index": 255,
                "miou": "confusion matrix over all evaluated pixels; mean IoU over classes with a non-empty union",
            },
            "dse": "dse_tune.dse with default settings and seed = the run's probe_seed, on the evaluation "
            "images (whole groups of 8)",
            "pooled_embeddings": "mean of the patch tokens per image",
            "selection": f"top candidate of candidate_indices(monitored DSE, window={window}, top={top})",
            "pooled_correlations": "all checkpoints of all runs pooled (raw score values)",
        },
        "warnings": warnings_list + [f"{r['run']} evaluation {r['index']}: {r['problem']}" for r in all_rows if r.get("problem")],
    }
    report = _json_ready(report)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / VALIDATION_JSON, json.dumps(report, indent=2, allow_nan=False) + "\n")
    if plot:
        plot_validation(report, out / VALIDATION_PNG)
    return report


# -------------------------------------------------------------------------- plot


def _min_max(values: Sequence[float | None]) -> list[float]:
    finite = [v for v in values if v is not None]
    if not finite:
        return [math.nan] * len(values)
    low, high = min(finite), max(finite)
    # A constant series sits in the middle instead of dividing by zero.
    return [math.nan if v is None else (0.5 if high == low else (v - low) / (high - low)) for v in values]


def plot_validation(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Per run: min-max normalised probe mIoU, DSE (evaluation images) and monitored DSE
    over epochs; the selection candidates circled, the selected one starred, the best
    mIoU (oracle) marked. Written atomically as PNG."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from dse_tune.atomic import atomic_write

    names = list(report["per_run"])
    columns = min(3, len(names))
    rows_count = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows_count), layout="constrained")
    axes = figure.subplots(rows_count, columns, squeeze=False).ravel()
    for axis in axes[len(names):]:
        axis.set_visible(False)
    for axis, name in zip(axes, names):
        rows = [r for r in report["checkpoints"] if r["run"] == name]
        x = [r["epoch"] if r.get("epoch") is not None else r["index"] for r in rows]
        miou = _min_max([r.get("miou") for r in rows])
        axis.plot(x, miou, marker="o", color="black", label="probe mIoU")
        axis.plot(x, _min_max([r.get("dse") for r in rows]), marker=".", color="tab:blue", label="DSE (eval images)")
        monitored = _min_max([r.get("dse_monitored") for r in rows])
        axis.plot(x, monitored, linestyle=":", color="tab:orange", label="DSE (monitored)")
        candidates = [i for i, r in enumerate(rows) if r.get("candidate")]
        axis.scatter([x[i] for i in candidates], [monitored[i] for i in candidates], s=120, facecolors="none",
                     edgecolors="tab:red", zorder=3, label="candidates")
        selected = [i for i, r in enumerate(rows) if r.get("selected")]
        axis.scatter([x[i] for i in selected], [monitored[i] for i in selected], marker="*", s=160,
                     color="tab:red", zorder=4, label="selected")
        best = report["per_run"][name]["selection"]["best"]["index"]
        best_positions = [i for i, r in enumerate(rows) if r["index"] == best]
        axis.scatter([x[i] for i in best_positions], [miou[i] for i in best_positions], marker="^", s=90,
                     color="tab:green", zorder=4, label="best mIoU (oracle)")
        tau = report["per_run"][name]["kendall_tau"].get("dse")
        tau_text = "n/a" if tau is None else f"{tau:+.2f}"
        axis.set_title(f"{name}\ntau(DSE, mIoU) = {tau_text}", fontsize=9)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel("min-max normalised")
        axis.set_ylim(-0.08, 1.08)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=7)
    path = Path(path)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    return path


# --------------------------------------------------------------------------- CLI


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
    parser.add_argument("--train-split", default="train", help="split the probe is fitted on (default: train)")
    parser.add_argument("--eval-split", default="test",
                        help="split the probe and the label-free scores are computed on (default: test)")
    parser.add_argument("--probe-images", type=int, default=None, metavar="N",
                        help="at most N images per split, evenly spread (default: all; synthetic: 64)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="K",
                        help="number of classes (default: max mask label + 1; synthetic: 6)")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default: each run's image_size)")
    parser.add_argument("--window", type=int, default=2, help="selection candidate window, +- evaluations (default: 2)")
    parser.add_argument("--top", type=int, default=3, help="selection candidates kept (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--device", default="cpu", help="torch device for the features (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw validation.png")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _format(value: Any) -> str:
    # round() first, so that -1e-6 prints as +0.000, not -0.000.
    return "   n/a" if value is None else f"{round(value, 3) + 0.0:+.3f}"


def run(args: argparse.Namespace) -> int:
    """``dse-tune validate``: 0 when at least one checkpoint was probed, 1 when none
    could be (the files are still written), 2 on bad input."""
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        report = validate(
            args.run_dir,
            args.data,
            args.out,
            train_split=args.train_split,
            eval_split=args.eval_split,
            probe_images=args.probe_images,
            num_classes=args.num_classes,
            image_size=args.image_size,
            window=args.window,
            top=args.top,
            batch_size=args.batch_size,
            device=args.device,
            plot=not args.no_plot,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as error:
        print(f"dse-tune validate: error: {error}", file=sys.stderr)
        return 2
    print(f"{'score':<28} {'tau (pooled)':>12} {'rho (pooled)':>12} {'mean tau/run':>12}")
    for name in SCORE_NAMES:
        print(
            f"{name:<28} {_format(report['kendall_tau'][name]):>12} {_format(report['spearman'][name]):>12} "
            f"{_format(report['kendall_tau_mean_over_runs'][name]):>12}"
        )
    selection = report["selection"]
    print(
        f"mIoU: DSE-selected {_format(selection['selected']['miou'])}, last {_format(selection['last']['miou'])}, "
        f"best (oracle) {_format(selection['best']['miou'])}; gain vs last {_format(selection['gain_vs_last'])}"
    )
    print(f"wrote {Path(args.out) / VALIDATION_JSON}" + ("" if args.no_plot else f" and {VALIDATION_PNG}"))
    probed = sum(1 for r in report["checkpoints"] if r.get("miou") is not None)
    if not probed:
        print("dse-tune validate: error: no checkpoint could be probed (see 'warnings')", file=sys.stderr)
        return 1
    return 0
