"""Synthetic scenes: procedurally generated dense scenes with exact per-pixel masks.

:mod:`dse_tune.data` re-exports :class:`SyntheticScenes`; rendering is a job of its own.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "ring", "cross")


# Why texture and not colour: a randomly initialised ViT already separates classes that
# differ by colour (its patch embedding is a random linear map of the pixels), so
# pretraining would have nothing to add. A texture of random phase and orientation is
# invisible to a linear read-out of random patch features.
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
    classes in :data:`SYNTHETIC_CLASSES`, told apart by texture and shape, never by colour
    (random hue, brightness and contrast; random texture orientation, phase and +-15%
    period). Scene ``i`` depends only on ``(seed, i)``: it is the same on any machine, in
    any order, in any worker process.

    ``image_size`` is the side of the square images in pixels (textures are relative to
    it; render at 64 px or more for the finest one to survive).

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


