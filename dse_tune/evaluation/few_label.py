"""Few-label confirmation: decide between the DSE-shortlisted checkpoints with a handful
of labelled images, and only where the labels can tell them apart.

Label-free DSE cannot choose beta (the regulariser raises the score that would judge it,
``docs/selection.md``). This module fits the linear probe of
:mod:`dse_tune.evaluation.linear_probe` on at most ``label_images`` labelled images (half
to fit, the disjoint other half to score) for each run's shortlist (its DSE candidates
and its label-free choice), and returns each checkpoint's probe mIoU for
``select_best(runs, confirmed=...)``.

A few scored images give a noisy mIoU (with 8 labels, 0.197 against 0.186 says nothing),
so every value carries its spread (a bootstrap over the scored images, not over the
fitting half: :attr:`FewLabelScores.spread`), two checkpoints are compared by their
paired per-image difference (:meth:`FewLabelScores.difference`), and
:func:`select_with_labels` calls a winner only beyond ``NOISE_Z`` standard errors of it;
inside, the label-free choice stands and the decision says so.

Example:
    >>> split = load_few_label_split("synthetic", image_size=32, label_images=8)
    >>> len(split.fit), len(split.score), split.labels_used, split.num_classes
    (4, 4, 8, 6)
    >>> import numpy as np
    >>> perfect = np.stack([np.diag([5, 5])] * 4)  # 4 scored images, 2 classes
    >>> float(bootstrap_mious({"a": perfect}, draws=50)["a"].std())
    0.0
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dse_tune.arguments import check_int
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW, NOISE_Z

__all__ = [
    "BOOTSTRAP_DRAWS",
    "FewLabelScores",
    "FewLabelSplit",
    "bootstrap_mious",
    "bootstrap_standard_error",
    "confirm_candidates",
    "few_label_miou",
    "load_few_label_split",
    "miou_of",
    "per_image_confusions",
    "pooled_splits",
    "select_with_labels",
]

#: Bootstrap resamples of the scored images behind every spread.
BOOTSTRAP_DRAWS = 2000


@dataclass(frozen=True)
class FewLabelSplit:
    """The labelled images of a confirmation: ``fit`` and ``score`` are disjoint
    :class:`dse_tune.data.ProbeSet` objects with masks."""

    fit: Any
    score: Any
    num_classes: int
    description: dict[str, Any]
    #: What the caller should hear about the labels (e.g. splits pooled without asking).
    warnings: tuple[str, ...] = ()

    @property
    def labels_used(self) -> int:
        return len(self.fit) + len(self.score)


def pooled_splits(data: Any, splits: Sequence[str] | str | None) -> list[str]:
    """The split folders that ``data`` pools when no split is named: the sub-folders
    ``SPLIT/images/`` of a folder without ``images/`` of its own (empty when a split is
    named, for one split only, and for anything that is not such a folder).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val", "test"):
        ...     (root / split / "images").mkdir(parents=True)
        >>> pooled_splits(root, None), pooled_splits(root, "train")
        (['test', 'train', 'val'], [])
    """
    if splits is not None or not isinstance(data, (str, os.PathLike)) or str(data) == "synthetic":
        return []
    root = Path(data)
    if not root.is_dir() or (root / "images").is_dir():
        return []
    found = sorted(d.name for d in root.iterdir() if (d / "images").is_dir())
    return found if len(found) > 1 else []


def _open_labelled(data: Any, splits: Sequence[str] | str | None) -> Any:
    from dse_tune.evaluation.labelled_data import SYNTHETIC_RENDER_SIZE, SYNTHETIC_VALIDATION_SEED
    from dse_tune.data import DatasetError, SyntheticScenes, open_dataset

    if str(data) == "synthetic":
        return SyntheticScenes(num_images=256, image_size=SYNTHETIC_RENDER_SIZE, seed=SYNTHETIC_VALIDATION_SEED)
    try:
        dataset = open_dataset(data, splits=splits)
    except DatasetError as error:
        raise ValueError(f"--confirm-with {data}: {error}") from None
    if not getattr(dataset, "has_masks", False):
        raise ValueError(
            f"--confirm-with {data}: no masks; few-label confirmation needs SPLIT/masks/NAME.png next to "
            "SPLIT/images/NAME.png (8-bit class index, 255 = ignore)"
        )
    return dataset


def load_few_label_split(
    data: str | os.PathLike | Any,
    *,
    image_size: int | tuple[int, int] | str,
    label_images: int = 32,
    splits: Sequence[str] | str | None = None,
    num_classes: int | None = None,
    seed: int | None = None,
) -> FewLabelSplit:
    """At most ``label_images`` labelled images of ``data``, split into two disjoint
    halves (fit, score), resized like a monitoring probe set.

    Args:
        data: a folder with ``images/`` + ``masks/`` (or ``SPLIT/images`` with ``splits``),
            ``"synthetic"`` (a scene family no pretraining run uses), or a dataset with
            ``load_image``/``load_mask``.
        label_images: the label budget (at least 2: one image to fit, one to score).
        seed: None spreads the images evenly over the sorted files (deterministic);
            an integer draws them at random (for benchmarks).

    A folder of several splits read without ``splits`` pools them, and ``warnings`` say so
    (:func:`select_with_labels` passes them on to the decision, which ``dse-tune select`` prints).
    """
    from dse_tune.evaluation.labelled_data import ImageSubset
    from dse_tune.data import build_probe_set, probe_indices

    check_int("label_images", label_images, minimum=2, extra="(one image to fit, one to score)")
    dataset = _open_labelled(data, splits)
    pooled = pooled_splits(data, splits)
    notes = ()
    if pooled:
        notes = (f"--confirm-with {data}: no --label-split given, so the labelled images come from the splits "
                 f"{', '.join(pooled)} pooled together; name one (e.g. --label-split {pooled[-1]}) to keep the "
                 "others out of the decision",)
    count = min(label_images, len(dataset))
    if count < 2:
        raise ValueError(f"--confirm-with {data}: {len(dataset)} labelled image(s); at least 2 are needed")
    chosen = (probe_indices(len(dataset), count) if seed is None
              else sorted(random.Random(seed).sample(range(len(dataset)), count)))
    source = getattr(dataset, "describe", lambda: str(data))()
    # Alternate positions: both halves spread over the whole folder (video frames are sorted).
    halves = {"fit": chosen[0::2], "score": chosen[1::2]}
    sets = {name: build_probe_set(ImageSubset(dataset, indices, description=f"{source} images {indices}"),
                                  size=len(indices), image_size=image_size)
            for name, indices in halves.items()}
    masks = [sets["fit"].masks, sets["score"].masks]
    labels = [int(m[m != 255].max()) for m in masks if bool((m != 255).any())]
    if not labels:
        raise ValueError(f"--confirm-with {data}: the chosen masks have no labelled pixel (all 255)")
    known = getattr(dataset, "num_classes", None)
    classes = num_classes or (known if isinstance(known, int) else max(labels) + 1)
    description = {"data": str(data), "fit_indices": halves["fit"], "score_indices": halves["score"],
                   "labels_used": count, "image_size": image_size, "num_classes": classes, "seed": seed,
                   "splits": [splits] if isinstance(splits, str) else (None if splits is None else list(splits)),
                   "pooled_splits": pooled}
    return FewLabelSplit(sets["fit"], sets["score"], classes, description, notes)


def per_image_confusions(
    model: Any, fit: Any, score: Any, num_classes: int, *, device: str = "cpu", batch_size: int = 64,
    **fit_kwargs: Any,
) -> np.ndarray:
    """The linear probe fitted on ``model``'s tokens of ``fit``, scored on ``score``: one
    (classes, classes) confusion matrix per scored image, shape (images, C, C), int64.
    Their sum is the confusion :func:`~dse_tune.evaluation.linear_probe.linear_probe_model`
    scores; kept per image so that the spread of the mIoU can be bootstrapped."""
    from dse_tune.evaluation.linear_probe import confusion_matrix, fit_linear_probe, frozen_tokens

    fit_tokens, score_tokens = frozen_tokens(model, (fit.images, score.images), device, batch_size)
    probe = fit_linear_probe(fit_tokens, fit.masks, num_classes, **fit_kwargs)
    predictions = probe.predict(score_tokens, (int(score.masks.shape[1]), int(score.masks.shape[2])))
    return np.stack([confusion_matrix(predicted, mask, num_classes).cpu().numpy()
                     for predicted, mask in zip(predictions, score.masks)]).astype(np.int64)


def miou_of(confusion: np.ndarray) -> np.ndarray:
    """mIoU of (..., C, C) confusion matrices: mean IoU over the classes with a non-empty
    union (NaN when none), as :func:`~dse_tune.evaluation.linear_probe.scores_from_confusion`.

    Example:
        >>> float(miou_of(np.array([[3, 1], [0, 4]])))  # IoU 3/4 and 4/5
        0.775
    """
    counts = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diagonal(counts, axis1=-2, axis2=-1)
    union = counts.sum(-1) + counts.sum(-2) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / np.where(union > 0, union, 1), np.nan)
        defined = (union > 0).sum(-1)
        return np.where(defined > 0, np.nansum(iou, -1) / np.maximum(defined, 1), np.nan)


def bootstrap_mious(per_image: Mapping[str, np.ndarray], *, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, np.ndarray]:
    """mIoU of every checkpoint on ``draws`` bootstrap resamples of the scored images, the
    same resamples for all (so differences are paired): ``{key: (draws,) array}``.
    ``per_image`` maps a key to its (images, C, C) confusions (equal image counts)."""
    counts = {key: value.shape[0] for key, value in per_image.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"paired bootstrap needs the same scored images for every checkpoint, got {counts}")
    images = next(iter(counts.values()), 0)
    rng = np.random.default_rng(seed)
    weights = np.zeros((draws, images))
    np.add.at(weights, (np.arange(draws)[:, None], rng.integers(0, images, (draws, images))), 1.0)
    return {key: miou_of(np.einsum("dn,nij->dij", weights, value)) for key, value in per_image.items()}


def bootstrap_standard_error(samples: np.ndarray, images: int) -> float:
    """Bootstrap standard error, widened by sqrt(n / (n - 1)) (a plain bootstrap of n
    images underestimates it); NaN with fewer than 2 scored images."""
    finite = samples[np.isfinite(samples)]
    if images < 2 or finite.size < 2:
        return math.nan
    return float(finite.std(ddof=1) * math.sqrt(images / (images - 1)))


def few_label_miou(model: Any, split: FewLabelSplit, *, device: str = "cpu", batch_size: int = 64) -> float:
    """Linear-probe mIoU of ``model``: fitted on ``split.fit``, scored on ``split.score``."""
    confusions = per_image_confusions(model, split.fit, split.score, split.num_classes, device=device,
                                      batch_size=batch_size)
    return float(miou_of(confusions.sum(0)))


def _key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


@dataclass(frozen=True)
class FewLabelScores:
    """Probe mIoU per shortlisted checkpoint (``values``: path -> mIoU, the ``confirmed``
    argument of :func:`dse_tune.selection.select_best`), its spread and how it was measured.

    ``spread``: path -> bootstrap standard error of that mIoU over the ``scored_images``;
    ``per_image``: path -> (images, C, C) confusions, for paired comparisons;
    ``warnings``: what the caller should say (e.g. splits pooled without being asked).
    """

    values: dict[str, float]
    labels_used: int
    description: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    scored_images: int = 0
    warnings: tuple[str, ...] = ()
    per_image: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def difference(self, a: str | os.PathLike, b: str | os.PathLike, *, seed: int = 0) -> tuple[float, float]:
        """mIoU of ``a`` minus that of ``b`` and the standard error of that difference
        (paired bootstrap over the same scored images; NaN when either was not scored or
        they were scored on different images)."""
        found = {_key(k): v for k, v in self.per_image.items()}
        pair = [found.get(_key(a)), found.get(_key(b))]
        if any(p is None for p in pair) or pair[0].shape != pair[1].shape:
            return math.nan, math.nan
        difference = float(miou_of(pair[0].sum(0)) - miou_of(pair[1].sum(0)))
        samples = bootstrap_mious({"a": pair[0], "b": pair[1]}, seed=seed)
        return difference, bootstrap_standard_error(samples["a"] - samples["b"], pair[0].shape[0])


def _image_size(run: Any, given: Any) -> Any:
    """The run's probe image size, as validate and the label check read it
    (:func:`dse_tune.data.probe_image_size`: ``probe_image_size``, else ``image_size``)."""
    from dse_tune.data import probe_image_size
    from dse_tune.runs import CONFIG_FILE, read_config
    from dse_tune.typed_config import parse_image_size

    if given is not None:
        return parse_image_size(given)
    try:
        return probe_image_size(read_config(run.path) if run.path is not None else {})
    except ValueError as error:
        raise ValueError(f"run {run.name}: {CONFIG_FILE}: {error}; pass image_size") from None


def confirm_candidates(
    runs: Iterable[Any],
    data: str | os.PathLike | Any,
    *,
    label_images: int = 32,
    splits: Sequence[str] | str | None = None,
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    score: str = "raw",
    skip_untrained: bool = True,
    image_size: int | tuple[int, int] | str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> FewLabelScores:
    """Few-label probe mIoU, with its spread, of every run's shortlist: the DSE candidates
    of :func:`dse_tune.selection.select_run` (same ``window``/``top``/``score``) and the
    run's label-free choice. A checkpoint that cannot be loaded is left out, with the
    reason in ``problems``; the others are still scored.
    """
    from dse_tune.checkpoints.tracked_run import score_checkpoints
    from dse_tune.evaluation.rescore import checkpoint_jobs
    from dse_tune.selection import select_run
    from dse_tune.typed_config import image_size_key

    def candidates_and_choice(run: Any) -> list[int | None]:
        chosen = select_run(run, window, top, score=score, skip_untrained=skip_untrained)
        return [*chosen.candidates, chosen.chosen]

    shortlist = checkpoint_jobs(runs, candidates_and_choice)
    # Each run's size read once; every split loaded before any scoring (bad labelled data
    # fails here), keyed as the validation report keys its sizes ("32", "96x128").
    sizes = {run.name: _image_size(run, image_size) for run, _, _ in shortlist}
    splits_by_size = {image_size_key(size): load_few_label_split(data, image_size=size, label_images=label_images,
                                                                 splits=splits) for size in sizes.values()}

    def confusions_of(model: Any, run: Any) -> np.ndarray:
        split = splits_by_size[image_size_key(sizes[run.name])]
        return per_image_confusions(model, split.fit, split.score, split.num_classes, device=device)

    per_image: dict[str, np.ndarray] = {}
    problems: dict[str, str] = {}
    for result in score_checkpoints(shortlist, confusions_of, desc="few-label probe", progress=progress, device=device):
        if result.problem:
            problems[str(result.checkpoint)] = result.problem
        else:
            per_image[str(result.checkpoint)] = result.value
    values = {key: float(miou_of(confusions.sum(0))) for key, confusions in per_image.items()}
    samples = bootstrap_mious(per_image) if per_image else {}
    spread = {key: bootstrap_standard_error(samples[key], per_image[key].shape[0]) for key in per_image}
    used = max((s.labels_used for s in splits_by_size.values()), default=0)
    scored = max((len(s.score) for s in splits_by_size.values()), default=0)
    description = {key: s.description for key, s in splits_by_size.items()}
    notes = tuple(dict.fromkeys(note for s in splits_by_size.values() for note in s.warnings))
    return FewLabelScores(values, used, description, problems, spread, scored, notes, per_image)


def in_points(value: float | None) -> str:
    """An mIoU (0-1) in points (0-100), one decimal; ``"n/a"`` for None or NaN."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def select_with_labels(runs: Sequence[Any], scores: FewLabelScores, *, z: float = NOISE_Z, **options: Any) -> Any:
    """THE few-label decision: :func:`dse_tune.selection.select_best` with ``confirmed`` =
    ``scores.values``, kept only when its winner beats the label-free choice by more than
    ``z`` standard errors of their paired difference; otherwise the label-free choice
    stands and its reason and warnings say so. ``options`` go to ``select_best``
    (``compare`` is set here). The result's ``parameters`` record ``few_label_verdict``
    (``"agrees"``, ``"decided"`` or ``"within_noise"``), the difference, its standard
    error, every value's spread and the number of scored images; ``scores.warnings``
    join its warnings.
    """
    from dse_tune.selection import select_best

    options.pop("compare", None)
    options.pop("confirmed", None)
    label_free = select_best(runs, **options)
    confirmed = select_best(runs, confirmed=scores.values, compare="few_label", **options)
    winner, fallback = confirmed.best_checkpoint, label_free.best_checkpoint
    record = {"few_label_spread": dict(scores.spread), "few_label_scored_images": scores.scored_images}
    if winner is None or fallback is None or _key(winner) == _key(fallback):
        verdict, difference, error = "agrees", 0.0, 0.0
    else:
        difference, error = scores.difference(winner, fallback)
        verdict = "decided" if math.isfinite(error) and difference > z * error else "within_noise"
    record.update(few_label_verdict=verdict, few_label_difference=difference, few_label_difference_se=error)
    extra = list(scores.warnings)
    if verdict == "within_noise":
        said = (f"few-label mIoU cannot tell {confirmed.best.name}, epoch {confirmed.best_epoch} from the label-free "
                f"choice ({label_free.best.name}, epoch {label_free.best_epoch}): {in_points(difference)} +- "
                f"{in_points(error)} points on {scores.scored_images} scored images, within {z:g} standard errors; "
                "kept the label-free choice (label more images to decide)")
        chosen, reason = label_free, f"{label_free.reason}; {said}"
        extra.append(said)
    else:
        chosen, reason = confirmed, confirmed.reason
        if verdict == "decided":
            reason += (f"; {in_points(difference)} +- {in_points(error)} mIoU points over the label-free choice "
                       f"({label_free.best.name}, epoch {label_free.best_epoch}) on {scores.scored_images} scored images")
    return dataclasses.replace(
        chosen, reason=reason, warnings=(*chosen.warnings, *extra), parameters={**chosen.parameters, **record}
    )
