from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from dse_tune.data import (
    IMAGENET_MEAN,
    DatasetError,
    ImageFolderDataset,
    SyntheticScenes,
    build_probe_set,
    open_dataset,
    probe_indices,
)
from dse_tune.ssl.views import ViewsDataset


def _save_png(path, size=(20, 12), value=100, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.full((size[1], size[0], channels) if channels == 3 else (size[1], size[0]), value, dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path)
    return path


# ------------------------------------------------------------------ synthetic scenes


def test_synthetic_scenes_depend_only_on_seed_and_index():
    scenes = SyntheticScenes(num_images=10, image_size=48, seed=3)
    image, mask = scenes.render(5)
    scenes.render(7)  # rendering other scenes first must not change scene 5
    again_image, again_mask = SyntheticScenes(num_images=10, image_size=48, seed=3).render(5)
    assert np.array_equal(image, again_image) and np.array_equal(mask, again_mask)
    assert not np.array_equal(image, scenes.render(6)[0])
    assert not np.array_equal(image, SyntheticScenes(num_images=10, image_size=48, seed=4).render(5)[0])
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 48) and mask.dtype == np.uint8


def _class_statistics(scenes):
    """Per class: mean colour and mean absolute pixel gradient (texture fineness) of its
    pixels over all scenes, measured inside the mask only."""
    colour_sums = {c: np.zeros(3) for c in range(scenes.num_classes)}
    gradient_sums = dict.fromkeys(range(scenes.num_classes), 0.0)
    counts = dict.fromkeys(range(scenes.num_classes), 0)
    for index in range(len(scenes)):
        image, mask = scenes.render(index)
        assert set(np.unique(mask)) <= set(range(scenes.num_classes))
        assert len(np.unique(mask)) >= 2, "every scene shows background and at least one object"
        gray = image.astype(float).mean(axis=2)
        gradient = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
        # Gradients only where both neighbours carry the same label: texture, not object edges.
        same = (mask[1:, :-1] == mask[:-1, :-1]) & (mask[:-1, 1:] == mask[:-1, :-1])
        for c in np.unique(mask):
            colour_sums[c] += image[mask == c].astype(float).sum(axis=0)
            counts[c] += int((mask == c).sum())
            gradient_sums[c] += gradient[same & (mask[:-1, :-1] == c)].sum()
    assert all(counts[c] > 0 for c in range(scenes.num_classes)), counts
    return {c: colour_sums[c] / counts[c] for c in counts}, {c: gradient_sums[c] / counts[c] for c in counts}


def test_synthetic_classes_differ_in_texture_not_in_colour():
    scenes = SyntheticScenes(num_images=60, image_size=64, seed=0)
    colour, fineness = _class_statistics(scenes)
    # Colour says nothing about the class: every class's mean colour is mid-grey-ish and
    # the class means lie close together (random hue and brightness per object).
    means = np.stack([colour[c] for c in range(scenes.num_classes)])
    assert np.ptp(means, axis=0).max() < 40, means
    # Texture does, and the masks sit on what is painted: fine stripes (disc) and
    # speckle (cross) change faster than coarse stripes (ring); the background is smooth.
    assert fineness[1] > 1.5 * fineness[4] and fineness[5] > fineness[4], fineness
    assert fineness[0] < 0.5 * min(fineness[c] for c in range(1, scenes.num_classes)), fineness


def test_synthetic_render_returns_fresh_arrays():
    scenes = SyntheticScenes(num_images=4, image_size=32, seed=0)
    image, mask = scenes.render(1)
    image[:] = 0
    mask[:] = 9
    again_image, again_mask = scenes.render(1)
    assert again_image.any() and not (again_mask == 9).any()
    assert np.array_equal(again_image, SyntheticScenes(num_images=4, image_size=32, seed=0).render(1)[0])


def test_synthetic_scenes_are_generated_fast():
    scenes = SyntheticScenes(num_images=64, image_size=64, seed=1)
    started = time.perf_counter()
    for index in range(64):
        scenes[index]
    # Vectorised numpy: about 2 ms a scene; the bound leaves room for a busy machine.
    assert time.perf_counter() - started < 3.0


def test_synthetic_arguments_are_checked():
    with pytest.raises(ValueError, match="num_images"):
        SyntheticScenes(num_images=0)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticScenes(num_images=2).render(2)


# ---------------------------------------------------------------------- folders


def test_plain_folder_is_read_recursively_in_sorted_order(tmp_path):
    for name in ["b.png", "a.jpg", "sub/c.JPEG", "sub/deeper/d.png"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 8), (255, 0, 0)).save(path, format="PNG" if name.endswith("png") else "JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in dataset.image_paths] == [
        "a.jpg", "b.png", "sub/c.JPEG", "sub/deeper/d.png"
    ]
    assert not dataset.has_masks
    image, mask = dataset[2]
    assert image.mode == "RGB" and image.size == (10, 8) and mask is None


def test_paired_layout_reads_masks_and_selects_splits(tmp_path):
    for split, names in {"train": ["x", "y"], "val": ["z"]}.items():
        for name in names:
            _save_png(tmp_path / split / "images" / f"{name}.png")
            _save_png(tmp_path / split / "masks" / f"{name}.png", value=3, mode="L")
    everything = ImageFolderDataset(tmp_path)
    assert [p.stem for p in everything.image_paths] == ["x", "y", "z"]
    assert everything.has_masks
    train = ImageFolderDataset(tmp_path, splits="train")
    assert len(train) == 2
    image, mask = train[1]
    assert mask.shape == (12, 20) and (mask == 3).all()
    assert [p.stem for p in ImageFolderDataset(tmp_path, splits=("val", "train")).image_paths] == ["z", "x", "y"]
    assert not ImageFolderDataset(tmp_path, splits="train", masks=False).has_masks


def test_unreadable_image_error_names_the_file(tmp_path):
    _save_png(tmp_path / "good.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    dataset = ImageFolderDataset(tmp_path)
    with pytest.raises(DatasetError, match="broken.png"):
        dataset.load_image(0)


def test_mask_of_other_size_error_names_the_mask(tmp_path):
    _save_png(tmp_path / "train" / "images" / "frame.png", size=(20, 12))
    _save_png(tmp_path / "train" / "masks" / "frame.png", size=(10, 6), mode="L")
    dataset = ImageFolderDataset(tmp_path, splits="train")
    with pytest.raises(DatasetError, match=r"masks[/\\]frame.png is 10x6 but its image .*frame.png is 20x12"):
        dataset.load_mask(0)


def test_missing_mask_error_names_the_file(tmp_path):
    _save_png(tmp_path / "images" / "a.png")
    _save_png(tmp_path / "masks" / "other.png", mode="L")
    with pytest.raises(DatasetError, match=r"masks[/\\]a.png"):
        ImageFolderDataset(tmp_path)


def test_empty_or_missing_folders_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images .* found in .*empty"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="missing_dir"):
        ImageFolderDataset(tmp_path / "missing_dir")
    _save_png(tmp_path / "data" / "train" / "images" / "a.png")
    with pytest.raises(DatasetError, match=r"split folder .*test does not exist .*\['train'\]"):
        ImageFolderDataset(tmp_path / "data", splits="test")


# ------------------------------------------------------------------- probe set


def test_probe_indices_spread_over_the_dataset():
    assert probe_indices(10, 4) == [0, 2, 5, 7]
    assert probe_indices(3, 8) == [0, 1, 2]
    with pytest.raises(ValueError, match="probe size"):
        probe_indices(3, 0)


def test_probe_set_is_fixed_normalised_and_resized():
    scenes = SyntheticScenes(num_images=20, image_size=64, seed=0)
    probe = build_probe_set(scenes, size=8, image_size=32)
    again = build_probe_set(scenes, size=8, image_size=32)
    assert probe.images.shape == (8, 3, 32, 32) and probe.images.dtype == torch.float32
    assert torch.equal(probe.images, again.images) and probe.indices == again.indices
    assert probe.masks.shape == (8, 32, 32) and probe.masks.dtype == torch.int64
    # ImageNet normalisation: a pixel of value v maps to (v - mean) / std.
    first = scenes.load_image(probe.indices[0]).resize((32, 32), Image.BICUBIC)
    expected = (np.asarray(first, dtype=np.float32)[..., 0].mean() / 255 - IMAGENET_MEAN[0]) / 0.229
    assert probe.images[0, 0].mean().item() == pytest.approx(expected, abs=0.05)
    # Nearest-neighbour masks keep class indices only.
    assert set(probe.masks.unique().tolist()) <= set(range(scenes.num_classes))


def test_views_dataset_applies_the_transform_and_open_dataset_dispatches(tmp_path):
    scenes = open_dataset("synthetic", synthetic_size=4, synthetic_image_size=32, seed=2)
    assert isinstance(scenes, SyntheticScenes) and len(scenes) == 4
    views = ViewsDataset(scenes, lambda image: [torch.zeros(3, *image.size)])
    item, index = views[3]
    assert index == 3 and item[0].shape == (3, 32, 32)
    _save_png(tmp_path / "a.png")
    assert isinstance(open_dataset(tmp_path), ImageFolderDataset)


# ----------------------------------------------------------------------- CamVid


def test_camvid_folder_loads_with_masks_and_splits(camvid_root):
    dataset = ImageFolderDataset(camvid_root, splits=("train", "val", "test"))
    assert len(dataset) == 701 and dataset.has_masks
    assert len(ImageFolderDataset(camvid_root, splits="train")) == 367
    image, mask = dataset[0]
    assert image.size == (160, 120) and mask.shape == (120, 160)
    assert set(np.unique(mask)) <= set(range(11)) | {255}
    probe = build_probe_set(ImageFolderDataset(camvid_root, splits="val"), size=16, image_size=48)
    assert probe.images.shape == (16, 3, 48, 48) and probe.masks.shape == (16, 48, 48)
    assert probe.indices[-1] > 90, "the probe spreads over the whole split, not its first frames"
