"""Images for pretraining and for DSE evaluation.

- :class:`ImageFolderDataset`: any folder of images, or CamVid's paired layout
  ``SPLIT/images/NAME.png`` + ``SPLIT/masks/NAME.png`` (8-bit class index, 255 = ignore);
- :class:`SyntheticScenes` (:mod:`dse_tune.synthetic`): generated scenes with exact masks;
- :func:`build_probe_set` / :func:`probe_set_for`: the fixed probe images every DSE
  evaluation of a run scores (the one place that rebuilds them from a run's settings);
  :func:`check_images` reads every image of a folder before training starts.

Masks are never used by pretraining or by DSE, only by the labelled checks. Every dataset
returns ``(PIL.Image, mask or None)``; :class:`dse_tune.ssl.views.ViewsDataset` adds the SSL views.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

# Re-exported: the data owner's names, wherever they are implemented.
from dse_tune.synthetic import SYNTHETIC_CLASSES, SyntheticScenes  # noqa: F401
from dse_tune.typed_config import NATIVE, parse_image_size, recorded_image_size  # noqa: F401

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PathLike = Union[str, Path]


class DatasetError(ValueError):
    """A file or folder of a dataset cannot be used; the message names it."""


def _images_under(folder: Path) -> list[Path]:
    images = (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    # Sorted by relative path so that the order is the same on every machine.
    return sorted(images, key=lambda p: p.relative_to(folder).as_posix())


class ImageFolderDataset(Dataset):
    """Images from a folder, optionally with paired segmentation masks.

    Layouts, tried in this order for ``root`` (or for each ``root/SPLIT``):

    1. ``images/`` (+ optional ``masks/``) directly below: the paired layout; the mask
       of ``images/NAME.ext`` is ``masks/NAME.png``.
    2. (``root`` only, ``splits=None``) sub-folders ``SPLIT/images/``: every such split,
       in sorted order, as in layout 1.
    3. Anything else: every image below the folder, recursively, without masks.

    Args:
        splits: a split name or a sequence of them (sub-folders of ``root``), e.g.
            ``("train", "val")``; ``None`` takes the whole folder.
        masks: read masks where the paired layout has them; ``False`` ignores them.

    Raises:
        DatasetError: the folder or a split is missing or holds no image, or a
            ``masks/`` folder lacks the mask of one of its images (the message names
            the folder or file).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val"):
        ...     for folder in ("images", "masks"):
        ...         (root / split / folder).mkdir(parents=True)
        ...     Image.new("RGB", (8, 6)).save(root / split / "images" / "a.png")
        ...     Image.new("L", (8, 6)).save(root / split / "masks" / "a.png")
        >>> ds = ImageFolderDataset(root, splits="train")
        >>> len(ds), ds.has_masks
        (1, True)
    """

    def __init__(self, root: PathLike, splits: str | Sequence[str] | None = None, *, masks: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"data folder {self.root} does not exist or is not a folder")
        if isinstance(splits, str):
            splits = (splits,)
        self.splits = tuple(splits) if splits is not None else None
        self.image_paths: list[Path] = []
        self.mask_paths: list[Path | None] = []

        if self.splits is None:
            if (self.root / "images").is_dir():
                folders = [self.root]
            else:
                folders = sorted(d for d in self.root.iterdir() if (d / "images").is_dir()) or [self.root]
        else:
            if not self.splits:
                raise DatasetError("splits is empty; pass None for the whole folder or at least one split name")
            folders = []
            for split in self.splits:
                folder = self.root / split
                if not folder.is_dir():
                    available = sorted(d.name for d in self.root.iterdir() if d.is_dir())
                    raise DatasetError(f"split folder {folder} does not exist (folders in {self.root}: {available})")
                folders.append(folder)

        for folder in folders:
            self._add_folder(folder, masks)
        if not self.image_paths:
            where = ", ".join(str(f) for f in folders)
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {where}")

    def _add_folder(self, folder: Path, read_masks: bool) -> None:
        image_dir = folder / "images"
        if not image_dir.is_dir():
            images = _images_under(folder)
            self.image_paths.extend(images)
            self.mask_paths.extend([None] * len(images))
            return
        images = _images_under(image_dir)
        if not images:
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {image_dir}")
        mask_dir = folder / "masks"
        use_masks = read_masks and mask_dir.is_dir()
        for image_path in images:
            mask_path = None
            if use_masks:
                relative = image_path.relative_to(image_dir).with_suffix(".png")
                mask_path = mask_dir / relative
                if not mask_path.is_file():
                    raise DatasetError(f"mask {mask_path} of image {image_path} is missing")
            self.image_paths.append(image_path)
            self.mask_paths.append(mask_path)

    @property
    def has_masks(self) -> bool:
        return all(m is not None for m in self.mask_paths)

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_image(self, index: int) -> Image.Image:
        return _read_rgb(self.image_paths[index])

    def load_mask(self, index: int) -> np.ndarray | None:
        mask_path = self.mask_paths[index]
        if mask_path is None:
            return None
        image_path = self.image_paths[index]
        try:
            with Image.open(mask_path) as mask_image:
                if mask_image.mode not in ("L", "P"):
                    raise DatasetError(
                        f"mask {mask_path} has mode {mask_image.mode!r}; expected an 8-bit class-index image (L or P)"
                    )
                mask = np.asarray(mask_image, dtype=np.uint8).copy()
            with Image.open(image_path) as image:
                image_size = image.size
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            raise DatasetError(f"cannot read mask {mask_path}: {error}") from error
        if (mask.shape[1], mask.shape[0]) != image_size:
            raise DatasetError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} "
                f"is {image_size[0]}x{image_size[1]}"
            )
        return mask

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray | None]:
        return self.load_image(index), self.load_mask(index)

    def describe(self) -> str:
        splits = f" splits={list(self.splits)}" if self.splits else ""
        return f"folder {self.root}{splits} ({len(self)} images{', with masks' if self.has_masks else ''})"


def _read_rgb(path: Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """The image as RGB; ``draft``: a JPEG decodes at a reduced scale (still every byte)."""
    try:
        with Image.open(path) as image:
            if draft is not None:
                image.draft("RGB", draft)
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error


def open_dataset(
    data: PathLike | Dataset,
    *,
    splits: str | Sequence[str] | None = None,
    synthetic_size: int = 512,
    synthetic_image_size: int = 64,
    seed: int = 0,
) -> Dataset:
    """``"synthetic"`` -> :class:`SyntheticScenes`; a folder -> :class:`ImageFolderDataset`;
    a dataset object (``__len__`` and ``load_image(i) -> PIL.Image``) as is."""
    if isinstance(data, Dataset):
        if not hasattr(data, "load_image"):
            raise TypeError(
                f"dataset {type(data).__name__} needs a load_image(index) -> PIL.Image method; "
                "wrap your images in ImageFolderDataset or subclass it"
            )
        return data
    if str(data) == "synthetic":
        return SyntheticScenes(num_images=synthetic_size, image_size=synthetic_image_size, seed=seed)
    return ImageFolderDataset(data, splits=splits)


#: A probe image size as given: ``N`` (a square), ``(H, W)``, ``"HxW"`` or ``"native"``
#: (read by :func:`~dse_tune.typed_config.parse_image_size`).
ImageSize = Union[int, str, Sequence[int]]


@dataclass
class ProbeSet:
    """The fixed images every DSE evaluation of a run scores.

    Attributes:
        images: float tensor (P, 3, H, W), ImageNet-normalised.
        masks: long tensor (P, H, W) with 255 = ignore, or None without masks.
        indices: dataset indices of the P images, in order.
        source: a description of the dataset they come from.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    indices: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images (for ``"native"``: the size they were scored at)."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def probe_indices(dataset_size: int, size: int) -> list[int]:
    """``size`` indices spread evenly over ``range(dataset_size)`` (all when fewer).

    Evenly spread rather than the first ``size``: folders of video frames (CamVid) are
    sorted by sequence, so the first frames would all show the same street.
    """
    if size < 1:
        raise ValueError(f"probe size must be >= 1, got {size}")
    count = min(size, dataset_size)
    return [(i * dataset_size) // count for i in range(count)]


def _fit(image: Image.Image, size: tuple[int, int], interpolation: Any) -> Image.Image:
    """``image`` resized to cover ``size`` (H, W) with its aspect kept, then centre-cropped."""
    import torchvision.transforms.functional as TF

    height, width = size
    if (image.height, image.width) == (height, width):
        return image
    if height == width:  # the square path of every run folder so far, kept bit-identical
        return TF.center_crop(TF.resize(image, height, interpolation), height)
    scale = max(height / image.height, width / image.width)
    covering = [max(height, round(image.height * scale)), max(width, round(image.width * scale))]
    return TF.center_crop(TF.resize(image, covering, interpolation), [height, width])


def build_probe_set(dataset: Dataset, *, size: int = 64, image_size: ImageSize = 32) -> ProbeSet:
    """The probe images: ``size`` images spread over ``dataset`` (:func:`probe_indices`),
    ImageNet-normalised, no augmentation; masks follow with nearest neighbour.

    ``image_size``:

    - ``N`` or ``(N, N)``: resized (short side) and centre-cropped to N x N;
    - ``(H, W)`` or ``"HxW"``: resized to cover H x W with the aspect kept, then
      centre-cropped (never stretched);
    - ``"native"``: each image at its own size. A probe set is one batch, so when the
      images differ in size the rule is: the most common size among the probe images
      wins (ties: the first image's) and the others are fitted to it as above.
      Frames of one camera (CamVid) all share one size and are scored untouched.

    A ViT scores any of these sizes (:func:`dse_tune.features.dense_tokens`).

    Example:
        >>> scenes = SyntheticScenes(num_images=4, image_size=64)
        >>> build_probe_set(scenes, size=2, image_size="48x64").image_size
        (48, 64)
        >>> build_probe_set(scenes, size=2, image_size="native").image_size
        (64, 64)
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    target = parse_image_size(image_size)
    indices = probe_indices(len(dataset), size)
    pictures = [dataset.load_image(index) for index in indices]
    if target == NATIVE:
        # Counter breaks ties by first occurrence: the first image's size.
        target = Counter((picture.height, picture.width) for picture in pictures).most_common(1)[0][0]
    with_masks = bool(getattr(dataset, "has_masks", False))
    images, masks = [], []
    for index, picture in zip(indices, pictures):
        picture = _fit(picture, target, InterpolationMode.BICUBIC)
        images.append(TF.normalize(TF.to_tensor(picture), IMAGENET_MEAN, IMAGENET_STD))
        if with_masks:
            mask = _fit(Image.fromarray(dataset.load_mask(index)), target, InterpolationMode.NEAREST)
            masks.append(torch.from_numpy(np.asarray(mask, dtype=np.int64).copy()))
    describe = getattr(dataset, "describe", None)
    return ProbeSet(
        images=torch.stack(images),
        masks=torch.stack(masks) if with_masks else None,
        indices=indices,
        source=describe() if callable(describe) else type(dataset).__name__,
    )


def _setting(config: Any, name: str, default: Any = None) -> Any:
    value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
    return default if value is None else value


def dataset_for(config: Any, data: PathLike | Dataset | None = None) -> Dataset:
    """The dataset a run's settings name (``data``, ``splits``, ``synthetic_size``, ``seed``
    of a PretrainConfig, a tracked run's probe settings or a ``config.json`` mapping);
    ``data`` overrides the settings' ``data`` (a folder, ``"synthetic"`` or a dataset object)."""
    return open_dataset(
        _setting(config, "data", "synthetic") if data is None else data,
        splits=_setting(config, "splits"),
        synthetic_size=int(_setting(config, "synthetic_size", 512)),
        seed=int(_setting(config, "seed", 0)),
    )


def probe_image_size(config: Any) -> tuple[int, int] | str:
    """The probe images' size a run's settings give: ``probe_image_size``, else
    ``image_size`` (a pretraining run's input size, or a tracked run's probe size)."""
    value = _setting(config, "probe_image_size") or _setting(config, "image_size")
    if value is None:
        raise ValueError("the settings give neither probe_image_size nor image_size")
    return parse_image_size(value)


def probe_set_for(config: Any, *, dataset: Dataset | None = None, image_size: ImageSize | None = None) -> ProbeSet:
    """THE probe set of a run's settings (see :func:`dataset_for` and :func:`probe_image_size`):
    pretraining, tracking, ``score``, the held-out set's exclusions all rebuild it here.

    ``dataset``: the already opened dataset of these settings; ``image_size``: overrides
    the settings' size. Every probe image is read before any scoring: a corrupt one is a
    :class:`DatasetError` naming the file.

    Example:
        >>> probe = probe_set_for({"data": "synthetic", "synthetic_size": 8, "probe_size": 4, "image_size": 32})
        >>> len(probe), probe.image_size
        (4, (32, 32))
    """
    dataset = dataset_for(config) if dataset is None else dataset
    size = probe_image_size(config) if image_size is None else parse_image_size(image_size)
    return build_probe_set(dataset, size=int(_setting(config, "probe_size", 64)), image_size=size)


def check_images(dataset: Dataset) -> None:
    """Read every image of a folder dataset before any training or scoring, so that a
    corrupt file fails now (a :class:`DatasetError` naming it), not mid-epoch; other
    datasets (synthetic scenes, user objects) are left to themselves."""
    if not isinstance(dataset, ImageFolderDataset):
        return
    for image_path in dataset.image_paths:
        _read_rgb(image_path, draft=(64, 64))
