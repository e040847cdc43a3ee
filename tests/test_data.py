from __future__ import annotations

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
    check_images,
    open_dataset,
    parse_image_size,
    probe_indices,
    probe_set_for,
    recorded_image_size,
)
from dse_tune.ssl.views import ViewsDataset


def _save_png(path, size=(20, 12), value=100, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.full((size[1], size[0], channels) if channels == 3 else (size[1], size[0]), value, dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path)
    return path


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


def test_image_sizes_parse_from_every_spelling_and_bad_ones_are_named():
    assert parse_image_size(32) == parse_image_size("32") == parse_image_size([32, 32]) == (32, 32)
    assert parse_image_size("96x128") == parse_image_size("96X128") == parse_image_size((96, 128)) == (96, 128)
    assert parse_image_size(" Native ") == "native"
    assert recorded_image_size(48) == [48, 48] and recorded_image_size("native") == "native"
    for bad in ("96x", "x", "0x8", "big", 1.5, True, [1, 2, 3], "-8"):
        with pytest.raises(ValueError, match="image size"):
            parse_image_size(bad)


def _folder_of_sizes(root, sizes):
    """PNG images of the given (width, height) sizes, each with a mask of its size."""
    for number, (width, height) in enumerate(sizes):
        gradient = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
        Image.fromarray(np.stack([gradient] * 3, axis=-1)).save(_path(root / "images" / f"{number}.png"))
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[:, width // 2 :] = 1  # left half class 0, right half class 1
        Image.fromarray(mask, mode="L").save(_path(root / "masks" / f"{number}.png"))
    return ImageFolderDataset(root)


def _path(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_rectangular_probe_keeps_the_aspect_and_crops_the_centre(tmp_path):
    dataset = _folder_of_sizes(tmp_path, [(160, 120)] * 3)
    probe = build_probe_set(dataset, size=3, image_size="48x64")
    assert probe.images.shape == (3, 3, 48, 64) and probe.masks.shape == (3, 48, 64) and probe.image_size == (48, 64)
    # 160x120 -> 64x48 is a pure downscale: the mask's class boundary stays in the middle.
    assert probe.masks[0, :, :32].eq(0).all() and probe.masks[0, :, 32:].eq(1).all()
    # A square probe of a landscape image crops the sides (aspect kept, never stretched):
    # the left half of the 48x48 crop is the class-0 half of the centre.
    square = build_probe_set(dataset, size=1, image_size=48)
    assert square.masks.shape == (1, 48, 48) and square.masks[0, :, :24].eq(0).all()
    assert square.masks[0, :, 24:].eq(1).all()


def test_native_probe_keeps_each_size_and_fits_the_odd_one_to_the_most_common(tmp_path):
    same = build_probe_set(_folder_of_sizes(tmp_path / "same", [(40, 24)] * 3), size=3, image_size="native")
    assert same.image_size == (24, 40)
    # Untouched: the normalised pixels are exactly the file's (no resampling).
    row = same.images[0, 0, 0] * 0.229 + IMAGENET_MEAN[0]
    assert torch.allclose(row, torch.linspace(0, 255, 40).to(torch.uint8).float() / 255, atol=1e-6)
    mixed = _folder_of_sizes(tmp_path / "mixed", [(40, 24), (80, 48), (40, 24)])
    probe = build_probe_set(mixed, size=3, image_size="native")
    assert probe.image_size == (24, 40) and probe.masks.shape == (3, 24, 40)
    assert probe.masks[1, :, :20].eq(0).all() and probe.masks[1, :, 20:].eq(1).all()


def test_probe_set_for_rebuilds_the_probe_of_recorded_settings():
    pretrain_run = {"data": "synthetic", "synthetic_size": 12, "seed": 3, "probe_size": 5, "image_size": 32}
    probe = probe_set_for(pretrain_run)
    expected = build_probe_set(SyntheticScenes(num_images=12, image_size=64, seed=3), size=5, image_size=32)
    assert torch.equal(probe.images, expected.images) and probe.indices == expected.indices
    # probe_image_size wins over the training size; an old int reads as a square.
    assert probe_set_for({**pretrain_run, "probe_image_size": [32, 48]}).image_size == (32, 48)
    assert probe_set_for({**pretrain_run, "probe_image_size": 40}).image_size == (40, 40)
    assert probe_set_for(pretrain_run, image_size="native").image_size == (64, 64)


def test_a_corrupt_image_is_found_before_use_and_named(tmp_path):
    _save_png(tmp_path / "a.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    (tmp_path / "b.png").write_bytes((tmp_path / "whole.png").read_bytes()[:2000])  # a truncated PNG
    (tmp_path / "whole.png").unlink()
    dataset = ImageFolderDataset(tmp_path)
    with pytest.raises(DatasetError, match="b.png"):
        check_images(dataset)
    with pytest.raises(DatasetError, match="b.png"):
        probe_set_for({"data": str(tmp_path), "probe_size": 2, "image_size": 8})  # a.png, b.png


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
