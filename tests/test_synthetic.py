"""Synthetic scenes (dse_tune/synthetic.py): deterministic, textured, checked."""

from __future__ import annotations

import numpy as np
import pytest

from dse_tune.synthetic import SyntheticScenes


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


def test_synthetic_arguments_are_checked():
    with pytest.raises(ValueError, match="num_images"):
        SyntheticScenes(num_images=0)
    with pytest.raises(IndexError, match="out of range"):
        SyntheticScenes(num_images=2).render(2)


