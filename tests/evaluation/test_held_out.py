"""The held-out set of a sweep: disjoint from every run's monitoring probe set, the same
images every time, and clear errors when no fair set can be built."""

from __future__ import annotations

import pytest
import torch

from dse_tune.evaluation.held_out import (
    build_held_out_set,
    held_out_set_for,
    image_fingerprint,
    monitoring_probe_fingerprints,
)
from dse_tune.runs import Evaluation, RunRecord, load_sweep
from dse_tune.data import SyntheticScenes, build_probe_set, open_dataset
from tests.evaluation.tiny_runs import HELD_OUT, SWEEP_CONFIG

TINY = SWEEP_CONFIG


@pytest.mark.slow
def test_held_out_images_are_disjoint_from_the_monitoring_probe(sweep):
    runs = load_sweep(sweep)
    held_out = held_out_set_for(runs, size=HELD_OUT)
    dataset = open_dataset("synthetic", synthetic_size=TINY["synthetic_size"], seed=TINY["seed"])
    monitoring = build_probe_set(dataset, size=TINY["probe_size"], image_size=TINY["image_size"])

    assert len(held_out) == HELD_OUT and held_out.images.shape == (HELD_OUT, 3, 32, 32)
    assert not set(held_out.indices) & set(monitoring.indices)
    for image in held_out.images:
        assert not any(torch.equal(image, other) for other in monitoring.images)
    held_out_fingerprints = {image_fingerprint(dataset.load_image(i)) for i in held_out.indices}
    assert not held_out_fingerprints & monitoring_probe_fingerprints(runs[0].config)
    assert held_out.checked_runs == ("beta=0.0", "beta=0.1") and held_out.unchecked_runs == ()
    assert held_out.excluded == TINY["probe_size"] and held_out.from_training_data is True
    # The same images in the same order every time.
    again = held_out_set_for(runs, size=HELD_OUT)
    assert again.indices == held_out.indices and torch.equal(again.images, held_out.images)
    assert again.fingerprint == held_out.fingerprint


class ShuffledScenes(SyntheticScenes):
    """The runs' scenes under other indices: exclusion must work by content."""

    def load_image(self, index):
        # Rotated by 4: the evenly spread picks land on probe set scenes (every 4th).
        return super().load_image((index + 4) % self.num_images)

    def describe(self):
        return "the same scenes, rotated"


@pytest.mark.slow
def test_probe_images_are_excluded_by_content_under_any_index(sweep):
    runs = load_sweep(sweep)
    shuffled = ShuffledScenes(num_images=TINY["synthetic_size"], seed=TINY["seed"])
    held_out = held_out_set_for(runs, data=shuffled, size=HELD_OUT)
    monitoring = monitoring_probe_fingerprints(runs[0].config)
    chosen = {image_fingerprint(shuffled.load_image(i)) for i in held_out.indices}
    assert len(held_out) == HELD_OUT and not chosen & monitoring
    assert held_out.excluded > 0 and held_out.from_training_data is None


def record(name, **config):
    base = {
        "data": "synthetic",
        "splits": None,
        "synthetic_size": 8,
        "seed": 0,
        "probe_size": 8,
        "image_size": 32,
    }
    return RunRecord(name, (Evaluation(0, 1.0, checkpoint="c.ckpt"),), {**base, **config})


def test_no_held_out_image_left_is_a_clear_error():
    with pytest.raises(
        ValueError,
        match="no held-out images: all 8 images of synthetic scenes .* monitoring probe set",
    ):
        held_out_set_for([record("a")], size=4)


def test_runs_on_different_data_need_an_explicit_held_out_set(tmp_path):
    folders = [record("a", data=str(tmp_path / "a")), record("b", data=str(tmp_path / "b"))]
    with pytest.raises(ValueError, match="runs trained on different or unknown data .* pass data="):
        held_out_set_for(folders, size=4)
    runs = [record("a", seed=0), record("b", seed=1)]
    # Synthetic scenes of several seeds: a family none of them trained on.
    unseen = held_out_set_for(runs, size=4)
    assert "seed 2" in unseen.source and unseen.from_training_data is False
    with pytest.raises(
        ValueError, match=r"different or no image sizes \(32x32, 64x64\); pass image_size="
    ):
        held_out_set_for([record("a"), record("b", image_size=64)], data="synthetic", size=4)
    # A run's probe_image_size wins over its training size, in any spelling.
    sized = [record("a", probe_image_size=[32, 48], probe_size=2), record("b", probe_image_size="32x48", probe_size=2)]
    assert held_out_set_for(sized, data="synthetic", size=2).image_size == (32, 48)
    fresh = SyntheticScenes(num_images=8, seed=99)  # scenes no run trained on
    held_out = held_out_set_for(runs, data=fresh, size=4)
    assert len(held_out) == 4 and held_out.checked_runs == ("a", "b")


def test_build_held_out_set_arguments():
    scenes = SyntheticScenes(num_images=6, image_size=32)
    with pytest.raises(ValueError, match="size .* must be a positive integer, got 0"):
        build_held_out_set(scenes, size=0, image_size=32)
    with pytest.warns(UserWarning, match="only 4 held-out images available"):
        held_out = build_held_out_set(scenes, size=8, image_size=32, exclude_indices=[0, 5])
    assert held_out.indices == (1, 2, 3, 4)


def test_runs_whose_probe_set_cannot_be_rebuilt_are_named():
    no_fields = RunRecord("from-elsewhere", (Evaluation(0, 1.0),), {"image_size": 32})
    fresh = SyntheticScenes(num_images=8, seed=99)
    with pytest.warns(
        UserWarning, match=r"monitoring probe set of 1 run\(s\) \(from-elsewhere; first"
    ):
        held_out = held_out_set_for([record("a"), no_fields], data=fresh, size=4)
    assert held_out.checked_runs == ("a",) and held_out.unchecked_runs == ("from-elsewhere",)
