"""The labelled images of validation: a train split (the linear probe is fitted on it)
and an evaluation split (the linear probe and the label-free scores are computed on it).

Images and masks are resized and centre-cropped to the models' input size exactly as a
monitoring probe set is (:func:`dse_tune.data.build_probe_set`), so the scores see
what the monitor saw. ``data="synthetic"`` draws both splits from a scene family no
pretraining run uses by default (:data:`SYNTHETIC_VALIDATION_SEED`).

Example:
    >>> splits = load_labelled_splits("synthetic", image_size=32, images_per_split=4)
    >>> tuple(splits.train.masks.shape), splits.num_classes, splits.description["evaluation"]["indices"]
    ((4, 32, 32), 6, [4, 5, 6, 7])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dse_tune.arguments import check_int

__all__ = [
    "DEFAULT_SYNTHETIC_IMAGES",
    "SYNTHETIC_RENDER_SIZE",
    "SYNTHETIC_VALIDATION_SEED",
    "LabelledSplits",
    "load_labelled_splits",
]

#: Scene family of the synthetic validation images: a seed no pretraining run uses by
#: default, so the linear probe's images were never trained on (same distribution: the
#: seed only changes the random draws of positions, sizes and colours).
SYNTHETIC_VALIDATION_SEED = 1_000_003
#: Synthetic scenes are rendered at this size (``open_dataset``'s default, the size
#: pretraining renders them at), then resized to the model's input like any image.
SYNTHETIC_RENDER_SIZE = 64
#: Images per split for ``data="synthetic"`` when ``images_per_split`` is None.
DEFAULT_SYNTHETIC_IMAGES = 64
_IGNORE = 255


@dataclass
class LabelledSplits:
    """The linear probe's images and masks at one input size.

    Attributes:
        train, evaluation: image sets with ``images`` (B, 3, S, S) and ``masks``
            (B, S, S) (:class:`dse_tune.data.ProbeSet` objects built from labelled data).
        num_classes_inferred: True when ``num_classes`` was read from the masks (max label + 1).
        description: JSON-ready description (sources, sizes, indices).
    """

    train: Any
    evaluation: Any
    num_classes: int
    num_classes_inferred: bool
    description: dict[str, Any]


class ImageSubset:
    """The images ``indices`` of ``dataset`` as a dataset, for
    :func:`dse_tune.data.build_probe_set` over chosen images (the same resizing,
    cropping and normalisation as a monitoring probe set). With ``masks`` (and a dataset
    that has them) their masks come along; the held-out set of rescoring needs none."""

    def __init__(self, dataset: Any, indices: Any, *, masks: bool = True, description: str | None = None) -> None:
        self.dataset, self.indices = dataset, list(indices)
        # A dataset that does not say (no has_masks) has masks if it can load them.
        self.has_masks = masks and bool(getattr(dataset, "has_masks", hasattr(dataset, "load_mask")))
        self.description = description

    def __len__(self) -> int:
        return len(self.indices)

    def load_image(self, index: int) -> Any:
        return self.dataset.load_image(self.indices[index])

    def load_mask(self, index: int) -> Any:
        return self.dataset.load_mask(self.indices[index])

    def describe(self) -> str:
        return describe_dataset(self.dataset) if self.description is None else self.description


def describe_dataset(dataset: Any) -> str:
    """``dataset.describe()`` where it has one, else its type's name."""
    describe = getattr(dataset, "describe", None)
    return describe() if callable(describe) else type(dataset).__name__


def _open_splits(
    data: str | os.PathLike, train_split: str, eval_split: str, images_per_split: int | None
) -> tuple[Any, Any, int | None]:
    """The train and evaluation datasets, and their class count when the data knows it."""
    from dse_tune.data import DatasetError, SyntheticScenes, open_dataset

    if str(data) == "synthetic":
        count = DEFAULT_SYNTHETIC_IMAGES if images_per_split is None else images_per_split
        scenes = SyntheticScenes(num_images=2 * count, image_size=SYNTHETIC_RENDER_SIZE, seed=SYNTHETIC_VALIDATION_SEED)
        return (
            *(ImageSubset(scenes, range(start, start + count), description=(
                f"synthetic scenes {start}..{start + count - 1} of seed {scenes.seed} ({scenes.image_size}px)"
            )) for start in (0, count)),
            SyntheticScenes.num_classes,
        )
    try:
        train_data = open_dataset(data, splits=train_split)
        eval_data = open_dataset(data, splits=eval_split)
    except DatasetError as error:
        raise ValueError(f"--data {data}: {error}") from None
    for split, dataset in ((train_split, train_data), (eval_split, eval_data)):
        if not dataset.has_masks:
            raise ValueError(
                f"split {split!r} of {data} has no masks: the linear probe needs {split}/masks/NAME.png next to "
                f"{split}/images/NAME.png (8-bit class index, 255 = ignore)"
            )
    return train_data, eval_data, None


def _class_count(
    data: Any, image_size: int, masks: tuple[Any, Any], num_classes: int | None, known_classes: int | None
) -> tuple[int, bool]:
    """The number of classes (given, known from the data, or max label + 1) and whether
    it was inferred; raises when a mask holds a label outside it."""
    labels = [int(m[m != _IGNORE].max()) for m in masks if bool((m != _IGNORE).any())]
    if not labels:
        raise ValueError(f"the masks of {data} have no labelled pixel (all 255) at image size {image_size}")
    inferred = num_classes is None
    if inferred:
        num_classes = known_classes if known_classes is not None else max(labels) + 1
    else:
        check_int("num_classes", num_classes, minimum=1)
    if max(labels) >= num_classes:
        raise ValueError(
            f"the masks of {data} hold label {max(labels)} but num_classes is {num_classes}; "
            "pass --num-classes larger than every label (255 = ignore)"
        )
    return int(num_classes), inferred


def _describe_split(images: Any, dataset: Any, split: str, synthetic: bool) -> dict[str, Any]:
    # Synthetic indices are scene numbers of the validation family; folder indices
    # are positions in the split's sorted file list.
    return {
        "source": images.source,
        "split": None if synthetic else split,
        "images": len(images),
        "indices": [dataset.indices[i] for i in images.indices] if synthetic else list(images.indices),
    }


def load_labelled_splits(
    data: str | os.PathLike,
    *,
    image_size: int,
    train_split: str = "train",
    eval_split: str = "test",
    images_per_split: int | None = None,
    num_classes: int | None = None,
) -> LabelledSplits:
    """Train and evaluation images with masks, resized and centre-cropped to ``image_size``
    exactly as a monitoring probe set (:func:`dse_tune.data.build_probe_set`).

    Args:
        data: a folder with ``SPLIT/images`` + ``SPLIT/masks`` (255 = ignore), or
            ``"synthetic"``: scenes ``0..n-1`` (train) and ``n..2n-1`` (evaluation) of
            the family :data:`SYNTHETIC_VALIDATION_SEED`, ``n = images_per_split``
            (default 64); the split names are then unused.
        images_per_split: at most this many images per split, evenly spread over it (a
            folder's images are sorted, so the first ones would be one video sequence);
            None takes every image.
        num_classes: None infers max label + 1 from the masks of both splits.
    """
    from dse_tune.data import build_probe_set

    if images_per_split is not None:
        check_int("images_per_split", images_per_split, minimum=1, extra="or None")
    train_data, eval_data, known_classes = _open_splits(data, train_split, eval_split, images_per_split)
    sets = {}
    for role, dataset in (("train", train_data), ("evaluation", eval_data)):
        size = len(dataset) if images_per_split is None else min(images_per_split, len(dataset))
        sets[role] = build_probe_set(dataset, size=size, image_size=image_size)
    train, evaluation = sets["train"], sets["evaluation"]
    num_classes, inferred = _class_count(data, image_size, (train.masks, evaluation.masks), num_classes, known_classes)
    synthetic = str(data) == "synthetic"
    description = {
        "data": str(data),
        "train": _describe_split(train, train_data, train_split, synthetic),
        "evaluation": _describe_split(evaluation, eval_data, eval_split, synthetic),
        "image_size": image_size,
        "num_classes": num_classes,
        "num_classes_inferred": inferred,
    }
    return LabelledSplits(train, evaluation, num_classes, inferred, description)
