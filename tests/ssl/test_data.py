from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from dse_tune.ssl.data import (
    IMAGENET_MEAN,
    DatasetError,
    ImageFolderDataset,
    SyntheticScenes,
    ViewsDataset,
    build_probe_set,
    open_dataset,
    probe_indices,
)


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


def test_synthetic_masks_are_exact_and_classes_differ_in_colour():
    scenes = SyntheticScenes(num_images=40, image_size=64, seed=0)
    colour_sums = {c: np.zeros(3) for c in range(scenes.num_classes)}
    counts = dict.fromkeys(range(scenes.num_classes), 0)
    for index in range(len(scenes)):
        image, mask = scenes.render(index)
        assert set(np.unique(mask)) <= set(range(scenes.num_classes))
        assert len(np.unique(mask)) >= 2, "every scene shows background and at least one object"
        for c in np.unique(mask):
            colour_sums[c] += image[mask == c].astype(float).sum(axis=0)
            counts[c] += int((mask == c).sum())
    assert all(counts[c] > 0 for c in range(scenes.num_classes)), counts
    mean = {c: colour_sums[c] / counts[c] for c in counts}
    # Per-pixel labels match what is painted: discs are red, boxes blue, triangles green.
    assert np.argmax(mean[1]) == 0 and np.argmax(mean[2]) == 2 and np.argmax(mean[3]) == 1


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
