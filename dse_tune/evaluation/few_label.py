"""Few-label confirmation: decide between the DSE-shortlisted checkpoints with a handful
of labelled images.

Label-free DSE cannot choose beta (the regulariser raises the score that would judge it,
``docs/selection.md``). Most users have a few labelled images. This module fits the
linear probe of :mod:`dse_tune.evaluation.linear_probe` on at most ``label_images`` of
them, half for fitting and the other half for scoring (disjoint), for the candidates
only (each run's DSE candidates, which include each beta's chosen checkpoint), and
returns each candidate's probe mIoU for ``select_best(runs, confirmed=...)``.

Checkpoints are loaded as :mod:`dse_tune.evaluation.validate` loads them
(:func:`dse_tune.ssl.methods.load_checkpoint`, the tokens the DSE monitor scored).

Example:
    >>> split = load_few_label_split("synthetic", image_size=32, label_images=8)
    >>> len(split.fit), len(split.score), split.labels_used, split.num_classes
    (4, 4, 8, 6)
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FewLabelScores", "FewLabelSplit", "confirm_candidates", "few_label_miou", "load_few_label_split"]


@dataclass(frozen=True)
class FewLabelSplit:
    """The labelled images of a confirmation: ``fit`` and ``score`` are disjoint
    :class:`dse_tune.data.ProbeSet` objects with masks."""

    fit: Any
    score: Any
    num_classes: int
    description: dict[str, Any]

    @property
    def labels_used(self) -> int:
        return len(self.fit) + len(self.score)


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
    image_size: int,
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
    """
    from dse_tune.evaluation.labelled_data import ImageSubset
    from dse_tune.data import build_probe_set, probe_indices

    if isinstance(label_images, bool) or not isinstance(label_images, int) or label_images < 2:
        raise ValueError(f"label_images must be an integer >= 2 (one image to fit, one to score), got {label_images!r}")
    dataset = _open_labelled(data, splits)
    count = min(label_images, len(dataset))
    if count < 2:
        raise ValueError(f"--confirm-with {data}: {len(dataset)} labelled image(s); at least 2 are needed")
    if seed is None:
        chosen = probe_indices(len(dataset), count)
    else:
        chosen = sorted(random.Random(seed).sample(range(len(dataset)), count))
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
                   "labels_used": count, "image_size": image_size, "num_classes": classes, "seed": seed}
    return FewLabelSplit(sets["fit"], sets["score"], classes, description)


def few_label_miou(model: Any, split: FewLabelSplit, *, device: str = "cpu", batch_size: int = 64) -> float:
    """Linear-probe mIoU of ``model``: fitted on ``split.fit``, scored on ``split.score``."""
    from dse_tune.evaluation.linear_probe import linear_probe_model

    result = linear_probe_model(model, split.fit, split.score, split.num_classes, batch_size=batch_size, device=device)
    return float(result.miou)


@dataclass(frozen=True)
class FewLabelScores:
    """Probe mIoU per shortlisted checkpoint (``values``: path -> mIoU, the ``confirmed``
    argument of :func:`dse_tune.selection.select_best`) and how it was measured."""

    values: dict[str, float]
    labels_used: int
    description: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def _image_size(run: Any, given: int | None) -> int:
    from dse_tune.runs import CONFIG_FILE, read_config

    size = given or (read_config(run.path).get("image_size") if run.path is not None else None)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"run {run.name}: {CONFIG_FILE} has no image_size; pass image_size")
    return size


def confirm_candidates(
    runs: Iterable[Any],
    data: str | os.PathLike | Any,
    *,
    label_images: int = 32,
    splits: Sequence[str] | str | None = None,
    window: int = 2,
    top: int | None = 3,
    score: str = "raw",
    skip_untrained: bool = True,
    image_size: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> FewLabelScores:
    """Few-label probe mIoU of every run's DSE candidates (the shortlist of
    :func:`dse_tune.selection.select_run` with the same ``window``/``top``/``score``).

    A checkpoint that is missing or cannot be loaded is left out, with the reason in
    ``problems``; the others are still scored.
    """
    from tqdm.auto import tqdm

    from dse_tune.checkpoints.tracked_run import checkpoint_loader
    from dse_tune.selection import select_run

    shortlist: list[tuple[Any, Path]] = []
    for run in runs:
        chosen = select_run(run, window, top, score=score, skip_untrained=skip_untrained)
        for position in chosen.candidates:
            checkpoint = run.checkpoint_path(run.evaluations[position])
            if checkpoint is not None:
                shortlist.append((run, checkpoint))
    splits_by_size: dict[int, FewLabelSplit] = {}
    values: dict[str, float] = {}
    problems: dict[str, str] = {}
    for run, checkpoint in tqdm(shortlist, desc="few-label probe", unit="checkpoint", disable=not progress):
        size = _image_size(run, image_size)
        if size not in splits_by_size:
            splits_by_size[size] = load_few_label_split(data, image_size=size, label_images=label_images, splits=splits)
        try:
            model = checkpoint_loader(run.path)(checkpoint, map_location=device)
            values[str(checkpoint)] = few_label_miou(model, splits_by_size[size], device=device)
        except Exception as error:  # noqa: BLE001 - one bad checkpoint must not stop the others
            problems[str(checkpoint)] = f"{type(error).__name__}: {error}"
    used = max((s.labels_used for s in splits_by_size.values()), default=0)
    description = {str(size): s.description for size, s in splits_by_size.items()}
    return FewLabelScores(values, used, description, problems)
