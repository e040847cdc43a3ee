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
in :class:`dse_tune.ssl.views.ViewsDataset` to apply an SSL transform (lightly's multi-view transforms).
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

# Why texture and not colour: when classes differ by colour, a randomly initialised
# ViT already separates them (its patch embedding is a random linear map of the
# pixels), so pretraining has nothing to add and the label check of a sweep measures
# noise. Here every object and the background draw their colours from the same
# distribution; a class is told apart by the spatial structure of its texture (kind and
# period), which a linear read-out of random patch features cannot see because the
# texture's phase and orientation are random.
#
# Per object class: texture kind and period (fraction of the image side; at the usual
# 64 px rendering and 32 px model input a period of 0.1 is 3.2 input pixels).
_CLASS_TEXTURES = {
    1: ("stripes", 0.10),  # disc: fine stripes
    2: ("checkerboard", 0.22),  # box: coarse checkerboard
    3: ("dots", 0.15),  # triangle: dot lattice
    4: ("stripes", 0.26),  # ring: coarse stripes
    5: ("speckle", 0.07),  # cross: blocky speckle
}


#: Rendered scenes an instance keeps in memory (about 50 MB at 64 px).
_SCENE_CACHE_LIMIT = 4096


def _random_colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark and a light colour of one random hue: the two ends of a texture."""
    base = rng.uniform(0.1, 0.9, 3)
    dark = base * rng.uniform(0.25, 0.6)
    light = base + (1.0 - base) * rng.uniform(0.3, 0.7)
    return dark, light


class SyntheticScenes(Dataset):
    """Procedurally generated dense scenes with exact per-pixel masks.

    Each scene is a smooth background (class 0) with 1-4 overlapping objects of the
    classes in :data:`SYNTHETIC_CLASSES` (disc, box, triangle, ring, cross). Classes are
    told apart by texture (fine stripes, coarse checkerboard, dot lattice, coarse
    stripes, speckle) and shape, never by colour: every object and the background take
    a random hue, brightness and contrast, and each texture a random orientation, phase
    and +-15% period. Scene ``i`` depends only on ``(seed, i)``: it is regenerated
    identically on any machine, in any order, in any worker process.

    Args:
        num_images: the dataset length.
        image_size: side of the square images in pixels (textures are defined relative
            to it; render at 64 px or more for the finest one to survive).
        seed: selects the scene family; scene ``i`` of seed ``s`` never changes.

    Example:
        >>> scenes = SyntheticScenes(num_images=8, image_size=64, seed=0)
        >>> image, mask = scenes[3]
        >>> image.size, mask.shape, mask.dtype, scenes.num_classes
        ((64, 64), (64, 64), dtype('uint8'), 6)
    """

    num_classes = len(SYNTHETIC_CLASSES)
    class_names = SYNTHETIC_CLASSES
    has_masks = True

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
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.num_images

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index`` as ``(image uint8 (H, W, 3), mask uint8 (H, W))`` (fresh arrays)."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"scene index {index} out of range for {self.num_images} scenes")
        scene = self._cache.get(index)
        if scene is None:
            scene = self._render(index)
            # Rendering costs more than a small ViT's training step on a CPU: keep the
            # scenes of the first epoch for the next ones (12 KB each at 64 px).
            if len(self._cache) < _SCENE_CACHE_LIMIT:
                self._cache[index] = scene
        return scene[0].copy(), scene[1].copy()

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        image = self._background(rng)
        mask = np.zeros((self.image_size, self.image_size), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            class_index = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
            inside, texture = self._object(class_index, rng)
            dark, light = _random_colour_pair(rng)
            painted = dark[None, None, :] * (1 - texture[..., None]) + light[None, None, :] * texture[..., None]
            image = np.where(inside[..., None], painted, image)
            mask[inside] = class_index
        # Sensor noise and a soft illumination gradient: no pixel-exact shortcut.
        angle = rng.uniform(0, 2 * np.pi)
        light_field = 1.0 + 0.2 * ((self._xx - 0.5) * np.cos(angle) + (self._yy - 0.5) * np.sin(angle))
        image = image * light_field[..., None] + rng.normal(0, 0.02, image.shape)
        return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), mask

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth, low-frequency waves between two colours of a random hue."""
        xx, yy = self._xx, self._yy
        texture = np.zeros_like(xx)
        for _ in range(2):
            frequency = rng.uniform(0.5, 2.0)
            angle = rng.uniform(0, np.pi)
            texture += np.sin(2 * np.pi * frequency * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
        texture = texture / 4.0 + 0.5
        dark, light = _random_colour_pair(rng)
        return dark[None, None, :] * (1 - texture[..., None]) + light[None, None, :] * texture[..., None]

    def _object(self, class_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Boolean support and texture in [0, 1] of one object instance."""
        if class_index not in _CLASS_TEXTURES:
            raise ValueError(f"unknown synthetic class index {class_index}")
        centre = rng.uniform(0.2, 0.8, 2)
        radius = rng.uniform(0.18, 0.34)
        angle = rng.uniform(0, 2 * np.pi)
        dx, dy = self._xx - centre[0], self._yy - centre[1]
        # Object-local coordinates (in radii) for the shape.
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radius
        r = np.sqrt(u**2 + v**2)
        if class_index == 1:  # disc
            inside = r <= 1.0
        elif class_index == 2:  # box
            inside = (np.abs(u) <= 1.0) & (np.abs(v) <= rng.uniform(0.6, 1.0))
        elif class_index == 3:  # triangle
            inside = (v >= -0.6) & (v <= 1.1 - np.sqrt(3.0) * np.abs(u))
        elif class_index == 4:  # ring
            inside = (r >= 0.45) & (r <= 1.0)
        else:  # cross
            arm = 0.4
            inside = ((np.abs(u) <= 1.0) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= 1.0))
        return inside, self._texture(*_CLASS_TEXTURES[class_index], rng)

    def _texture(self, kind: str, period: float, rng: np.random.Generator) -> np.ndarray:
        """A texture in [0, 1] of ``kind`` with a jittered period, random orientation and phase."""
        period *= rng.uniform(0.85, 1.15)
        angle = rng.uniform(0, np.pi)
        phase_u, phase_v = rng.uniform(0, 1, 2)
        # Texture coordinates in periods, in the texture's own (rotated) frame.
        a = (self._xx * np.cos(angle) + self._yy * np.sin(angle)) / period + phase_u
        b = (-self._xx * np.sin(angle) + self._yy * np.cos(angle)) / period + phase_v
        if kind == "stripes":
            texture = 0.5 + 0.5 * np.sin(2 * np.pi * a)
        elif kind == "checkerboard":
            texture = ((np.floor(a) + np.floor(b)) % 2).astype(np.float32)
        elif kind == "dots":
            distance = np.hypot(a - np.round(a), b - np.round(b))
            # Radius 0.4: half the area light, like every other texture (no brightness cue).
            texture = (distance < 0.4).astype(np.float32)
        elif kind == "speckle":
            cells = int(np.ceil(2.0 / period)) + 2
            values = rng.uniform(0, 1, (cells, cells))
            ia = np.floor(a).astype(int) % cells
            ib = np.floor(b).astype(int) % cells
            texture = values[ia, ib]
        else:
            raise ValueError(f"unknown texture kind {kind!r}")
        return texture.astype(np.float32)

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
