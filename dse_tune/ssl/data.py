"""Images for pretraining and for DSE evaluation.

Three pieces:

- :class:`ImageFolderDataset`: any folder of images (``.png``, ``.jpg``, ``.jpeg``,
  searched recursively, sorted), or the paired layout ``SPLIT/images/NAME.png`` +
  ``SPLIT/masks/NAME.png`` (8-bit class index, 255 = ignore) used by CamVid.
- :class:`SyntheticScenes`: procedurally generated dense scenes with exact per-pixel
  masks, deterministic by ``(seed, index)``, generated on the fly (no download).
- :func:`build_probe_set`: the fixed probe images (same images, same order, no
  augmentation) that every DSE evaluation of a run scores.

Masks are never used by pretraining or by DSE; they exist for the labelled probe that
validates the label-free score.

Every dataset here returns ``(PIL.Image, mask or None)`` from ``__getitem__``; wrap it
in :class:`ViewsDataset` to apply an SSL transform (lightly's multi-view transforms).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "ring", "cross")

PathLike = Union[str, Path]


class DatasetError(ValueError):
    """A file or folder of a dataset cannot be used; the message names it."""


# --------------------------------------------------------------------------- folders


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _images_under(folder: Path) -> list[Path]:
    # Sorted by relative path so that the order is the same on every machine.
    return sorted((p for p in folder.rglob("*") if _is_image(p)), key=lambda p: p.relative_to(folder).as_posix())


class ImageFolderDataset(Dataset):
    """Images from a folder, optionally with paired segmentation masks.

    Layouts, tried in this order for ``root`` (or for each ``root/SPLIT``):

    1. ``images/`` (+ optional ``masks/``) directly below: the paired layout; the mask
       of ``images/NAME.ext`` is ``masks/NAME.png``.
    2. (``root`` only, ``splits=None``) sub-folders ``SPLIT/images/``: every such split,
       in sorted order, as in layout 1.
    3. Anything else: every image below the folder, recursively, without masks.

    Args:
        root: the dataset folder.
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


def _read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error


# -------------------------------------------------------------------- synthetic scenes

# Per object class: base colour (RGB in [0, 1]) and texture. Classes differ in all of
# shape, colour and texture so that good dense features can separate them.
_CLASS_COLOURS = {
    1: (0.85, 0.20, 0.20),  # disc: red, polka dots
    2: (0.20, 0.35, 0.85),  # box: blue, stripes
    3: (0.20, 0.75, 0.30),  # triangle: green, checkerboard
    4: (0.92, 0.75, 0.15),  # ring: yellow, speckle
    5: (0.65, 0.25, 0.80),  # cross: purple, concentric waves
}


class SyntheticScenes(Dataset):
    """Procedurally generated dense scenes with exact per-pixel masks.

    Each scene is a textured background (class 0) with 2-5 overlapping objects of the
    classes in :data:`SYNTHETIC_CLASSES` (disc, box, triangle, ring, cross); each class
    has its own shape, colour and texture, with per-instance jitter in position, size,
    rotation, colour and texture frequency. Scene ``i`` depends only on ``(seed, i)``:
    it is regenerated identically on any machine, in any order, in any worker process.

    Args:
        num_images: the dataset length.
        image_size: side of the square images in pixels.
        seed: selects the scene family; scene ``i`` of seed ``s`` never changes.

    Example:
        >>> scenes = SyntheticScenes(num_images=8, image_size=64, seed=0)
        >>> image, mask = scenes[3]
        >>> image.size, mask.shape, mask.dtype
        ((64, 64), (64, 64), dtype('uint8'))
    """

    num_classes = len(SYNTHETIC_CLASSES)
    class_names = SYNTHETIC_CLASSES

    def __init__(self, num_images: int = 512, image_size: int = 64, *, seed: int = 0) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
        self.num_images = int(num_images)
        self.image_size = int(image_size)
        self.seed = int(seed)
        coords = (np.arange(self.image_size, dtype=np.float32) + 0.5) / self.image_size
        self._yy, self._xx = np.meshgrid(coords, coords, indexing="ij")

    has_masks = True

    def __len__(self) -> int:
        return self.num_images

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index`` as ``(image uint8 (H, W, 3), mask uint8 (H, W))``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"scene index {index} out of range for {self.num_images} scenes")
        rng = np.random.default_rng([self.seed, index])
        image = self._background(rng)
        mask = np.zeros((self.image_size, self.image_size), dtype=np.uint8)
        for _ in range(int(rng.integers(2, 6))):
            class_index = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
            inside, texture = self._object(class_index, rng)
            colour = np.clip(np.asarray(_CLASS_COLOURS[class_index]) + rng.normal(0, 0.06, 3), 0, 1)
            shaded = colour[None, None, :] * (0.55 + 0.45 * texture[..., None])
            image = np.where(inside[..., None], shaded, image)
            mask[inside] = class_index
        # Sensor noise and a soft illumination gradient: no pixel-exact colour shortcut.
        angle = rng.uniform(0, 2 * np.pi)
        light = 1.0 + 0.15 * ((self._xx - 0.5) * np.cos(angle) + (self._yy - 0.5) * np.sin(angle))
        image = image * light[..., None] + rng.normal(0, 0.02, image.shape)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        xx, yy = self._xx, self._yy
        texture = np.zeros_like(xx)
        # A few random plane waves: smooth, non-repeating background texture.
        for _ in range(3):
            frequency = rng.uniform(1.5, 6.0)
            angle = rng.uniform(0, np.pi)
            phase = rng.uniform(0, 2 * np.pi)
            texture += np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        texture = (texture / 6.0 + 0.5) + rng.normal(0, 0.05, xx.shape)
        colour_a = rng.uniform(0.25, 0.7, 3) * np.array([1.0, 0.95, 0.85])  # muted, earthy
        colour_b = np.clip(colour_a + rng.normal(0, 0.12, 3), 0, 1)
        return colour_a[None, None, :] * (1 - texture[..., None]) + colour_b[None, None, :] * texture[..., None]

    def _object(self, class_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Boolean support and texture in [0, 1] of one object instance."""
        centre = rng.uniform(0.15, 0.85, 2)
        radius = rng.uniform(0.12, 0.28)
        angle = rng.uniform(0, 2 * np.pi)
        dx, dy = self._xx - centre[0], self._yy - centre[1]
        # Object-local coordinates, so that textures rotate with the object.
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radius
        r = np.sqrt(u**2 + v**2)
        frequency = rng.uniform(2.5, 4.0)
        if class_index == 1:  # disc, polka dots
            inside = r <= 1.0
            texture = (np.sin(np.pi * frequency * u) * np.sin(np.pi * frequency * v) > 0.3).astype(np.float32)
        elif class_index == 2:  # box, stripes
            aspect = rng.uniform(0.5, 1.0)
            inside = (np.abs(u) <= 1.0) & (np.abs(v) <= aspect)
            texture = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * u)
        elif class_index == 3:  # triangle, checkerboard
            inside = (v >= -0.5) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u))
            texture = (np.sin(np.pi * frequency * u) * np.sin(np.pi * frequency * v) > 0).astype(np.float32)
        elif class_index == 4:  # ring, speckle
            inside = (r >= 0.55) & (r <= 1.0)
            texture = rng.uniform(0, 1, u.shape)
        elif class_index == 5:  # cross, concentric waves
            arm = 0.32
            inside = ((np.abs(u) <= 1.0) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= 1.0))
            texture = 0.5 + 0.5 * np.cos(2 * np.pi * frequency * r)
        else:
            raise ValueError(f"unknown synthetic class index {class_index}")
        return inside, texture.astype(np.float32)

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.render(index)[0], mode="RGB")

    def load_mask(self, index: int) -> np.ndarray:
        return self.render(index)[1]

    def __getitem__(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image, mask = self.render(index)
        return Image.fromarray(image, mode="RGB"), mask

    def describe(self) -> str:
        return f"synthetic scenes (seed {self.seed}, {self.num_images} images of {self.image_size}px)"


# ------------------------------------------------------------------------- helpers


class ViewsDataset(Dataset):
    """Applies an SSL transform to the images of a dataset: ``(views, index)`` items.

    ``transform`` is typically one of lightly's multi-view transforms (``DINOTransform``,
    ``MAETransform``, ...), which returns a list of tensors; the default collate turns a
    batch into a list of ``(B, 3, h, w)`` tensors, one per view.
    """

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.transform(self.dataset.load_image(index)), index


def open_dataset(
    data: PathLike | Dataset,
    *,
    splits: str | Sequence[str] | None = None,
    synthetic_size: int = 512,
    synthetic_image_size: int = 64,
    seed: int = 0,
) -> Dataset:
    """``"synthetic"`` -> :class:`SyntheticScenes`; a folder -> :class:`ImageFolderDataset`.

    A dataset object (anything with ``__len__`` and ``load_image(i) -> PIL.Image``) is
    returned as is.
    """
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


@dataclass
class ProbeSet:
    """The fixed images every DSE evaluation of a run scores.

    Attributes:
        images: float tensor (P, 3, S, S), ImageNet-normalised.
        masks: long tensor (P, S, S) with 255 = ignore, or None without masks.
        indices: dataset indices of the P images, in order.
        source: a description of the dataset they come from.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    indices: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.indices)


def probe_indices(dataset_size: int, size: int) -> list[int]:
    """``size`` indices spread evenly over ``range(dataset_size)`` (all when fewer).

    Evenly spread rather than the first ``size``: folders of video frames (CamVid) are
    sorted by sequence, so the first frames would all show the same street.
    """
    if size < 1:
        raise ValueError(f"probe size must be >= 1, got {size}")
    count = min(size, dataset_size)
    return [(i * dataset_size) // count for i in range(count)]


def build_probe_set(dataset: Dataset, *, size: int = 64, image_size: int = 32) -> ProbeSet:
    """Deterministic probe images: resized (short side) and centre-cropped to
    ``image_size``, ImageNet-normalised, no augmentation; masks resized with nearest
    neighbour the same way when the dataset has them.
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    indices = probe_indices(len(dataset), size)
    images, masks = [], []
    with_masks = bool(getattr(dataset, "has_masks", False))
    for index in indices:
        image = dataset.load_image(index)
        image = TF.center_crop(TF.resize(image, image_size, InterpolationMode.BICUBIC), image_size)
        images.append(TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD))
        if with_masks:
            mask = Image.fromarray(dataset.load_mask(index))
            mask = TF.center_crop(TF.resize(mask, image_size, InterpolationMode.NEAREST), image_size)
            masks.append(torch.from_numpy(np.asarray(mask, dtype=np.int64).copy()))
    describe = getattr(dataset, "describe", None)
    return ProbeSet(
        images=torch.stack(images),
        masks=torch.stack(masks) if with_masks else None,
        indices=indices,
        source=describe() if callable(describe) else type(dataset).__name__,
    )
