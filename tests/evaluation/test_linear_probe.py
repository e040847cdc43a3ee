"""The linear probe (labelled): known answers, chance level, ignore label, determinism, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dse_tune.evaluation.linear_probe import (
    IGNORE_INDEX,
    confusion_matrix,
    evaluate_linear_probe,
    fit_linear_probe,
    infer_grid,
    linear_probe_model,
    scores_from_confusion,
    training_pixels,
)

CAMVID = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "camvid"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def block_masks(num_images: int, grid: int, cell: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks constant on each token's cell: (token labels (B, grid, grid), masks).

    Classes come in stripes of tokens (a random class per token row, or per column):
    bilinear upsampling of one-hot logits then switches class exactly at the cell
    borders. (With an independent class per token, a pixel near a cell corner is
    outvoted by its three neighbours: no linear probe can reach 100% there.)
    """
    generator = torch.Generator().manual_seed(seed)
    lines = torch.randint(0, num_classes, (num_images, grid, 1), generator=generator).expand(-1, -1, grid)
    transpose = torch.rand(num_images, generator=generator) < 0.5
    token_labels = torch.where(transpose[:, None, None], lines.transpose(1, 2), lines).contiguous()
    masks = token_labels.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return token_labels, masks


def class_tokens(token_labels: torch.Tensor, num_classes: int, extra: int, seed: int) -> torch.Tensor:
    """Tokens whose first channels one-hot encode the class, plus noise channels."""
    generator = torch.Generator().manual_seed(seed)
    num_images = token_labels.shape[0]
    one_hot = F.one_hot(token_labels.reshape(num_images, -1), num_classes).float()
    noise = 0.1 * torch.randn(*one_hot.shape[:2], num_classes + extra, generator=generator)
    return torch.cat([one_hot, torch.zeros(*one_hot.shape[:2], extra)], -1) + noise


def test_tokens_that_encode_the_class_give_near_perfect_miou():
    labels, masks = block_masks(12, grid=4, cell=4, num_classes=3, seed=0)
    test_labels, test_masks = block_masks(6, grid=4, cell=4, num_classes=3, seed=1)
    linear_probe = fit_linear_probe(class_tokens(labels, 3, 2, seed=2), masks, num_classes=3)
    result = evaluate_linear_probe(linear_probe, class_tokens(test_labels, 3, 2, seed=3), test_masks)
    assert linear_probe.grid == (4, 4)
    assert result.miou > 0.95
    assert result.pixel_accuracy > 0.97
    assert len(result.per_class_iou) == 3 and result.evaluated_classes == (0, 1, 2)


def test_random_features_stay_near_chance():
    labels, masks = block_masks(24, grid=4, cell=4, num_classes=3, seed=0)
    _, test_masks = block_masks(24, grid=4, cell=4, num_classes=3, seed=1)
    generator = torch.Generator().manual_seed(5)
    train_tokens = torch.randn(24, 16, 8, generator=generator)
    test_tokens = torch.randn(24, 16, 8, generator=generator)
    result = evaluate_linear_probe(fit_linear_probe(train_tokens, masks, 3), test_tokens, test_masks)
    # Chance: pixel accuracy 1/3; a classifier with no signal has mIoU well below 1/3.
    assert result.pixel_accuracy < 0.45
    assert result.miou < 0.3


def test_pixels_labelled_255_never_enter_the_confusion_matrix():
    labels, masks = block_masks(6, grid=4, cell=4, num_classes=3, seed=0)
    tokens = class_tokens(labels, 3, 2, seed=1)
    linear_probe = fit_linear_probe(tokens, masks, 3)
    ignored = masks.clone()
    ignored[:, :5, :] = IGNORE_INDEX
    ignored[0] = IGNORE_INDEX
    result = evaluate_linear_probe(linear_probe, tokens, ignored)
    labelled = ignored != IGNORE_INDEX
    predictions = linear_probe.predict(tokens, (16, 16))
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for truth, predicted in zip(masks[labelled].tolist(), predictions[labelled].tolist()):
        expected[truth, predicted] += 1
    assert torch.equal(result.confusion, expected)
    assert result.num_pixels == int(labelled.sum())
    # Training with ignored pixels works and treats them as absent.
    assert math.isfinite(fit_linear_probe(tokens, ignored, 3).train_loss)


def test_same_inputs_give_identical_results_and_leave_the_global_rng_alone():
    labels, masks = block_masks(8, grid=4, cell=4, num_classes=3, seed=0)
    tokens = torch.randn(8, 16, 6, generator=torch.Generator().manual_seed(0)) + F.one_hot(labels.reshape(8, -1), 3).repeat(1, 1, 2)
    state = torch.get_rng_state()
    for options in ({}, {"optimizer": "adamw", "steps": 20, "batch_size": 3, "seed": 7}):
        first = fit_linear_probe(tokens, masks, 3, **options)
        second = fit_linear_probe(tokens, masks, 3, **options)
        assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
        assert evaluate_linear_probe(first, tokens, masks).miou == evaluate_linear_probe(second, tokens, masks).miou
    assert torch.equal(state, torch.get_rng_state())


def test_training_pixels_carry_exactly_the_bilinear_logits():
    grid, size = (3, 4), (12, 16)
    token_logits = torch.randn(2, 12, 5)
    rows, cols, index, weight = training_pixels(grid, size)
    assert rows.tolist() == [1, 3, 5, 7, 9, 11] and cols.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    sampled = (token_logits[:, index] * weight[None, :, :, None]).sum(2)
    full = F.interpolate(token_logits.transpose(1, 2).reshape(2, 5, *grid), size=size, mode="bilinear", align_corners=False)
    expected = full[:, :, rows][:, :, :, cols].permute(0, 2, 3, 1).reshape(2, -1, 5)
    torch.testing.assert_close(sampled, expected)


def test_grid_is_inferred_from_the_masks_aspect_ratio():
    assert infer_grid(64, (64, 64)) == (8, 8)
    assert infer_grid(12, (90, 120)) == (3, 4)
    with pytest.raises(ValueError, match="pass grid"):
        infer_grid(7, (64, 64))


def test_scores_leave_out_classes_with_an_empty_union():
    confusion = torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]])
    result = scores_from_confusion(confusion)
    assert result.per_class_iou[0] == pytest.approx(3 / 4)
    assert result.per_class_iou[1] == pytest.approx(4 / 5)
    assert math.isnan(result.per_class_iou[2]) and result.absent_classes == (2,)
    assert result.miou == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert result.pixel_accuracy == pytest.approx(7 / 8)
    assert result.as_dict()["per_class_iou"][2] is None
    assert torch.equal(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, IGNORE_INDEX]), 2), torch.tensor([[1, 0], [0, 0]]))


def test_errors_name_the_problem():
    tokens = torch.randn(2, 16, 4)
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    with pytest.raises(ValueError, match="holds 3 masks but the tokens hold 2 images"):
        fit_linear_probe(tokens, torch.zeros(3, 16, 16, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"grid \(3, 5\) holds 15 tokens but the tokens have N=16"):
        fit_linear_probe(tokens, masks, 2, grid=(3, 5))
    bad = masks.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label\(s\) \[7\] outside 0..1"):
        fit_linear_probe(tokens, bad, 2)
    with pytest.raises(ValueError, match="no labelled pixel"):
        fit_linear_probe(tokens, torch.full_like(masks, IGNORE_INDEX), 2)
    with pytest.raises(ValueError, match=r"tokens must be a \(B, N, d\) tensor"):
        fit_linear_probe(torch.randn(2, 16), masks, 2)
    with pytest.raises(TypeError, match="integer class indices"):
        fit_linear_probe(tokens, masks.float(), 2)
    with pytest.raises(ValueError, match="batch_size needs optimizer='adamw'"):
        fit_linear_probe(tokens, masks, 2, batch_size=1)
    linear_probe = fit_linear_probe(tokens, masks, 2)
    with pytest.raises(ValueError, match="fitted on 4"):
        evaluate_linear_probe(linear_probe, torch.randn(2, 16, 5), masks)


def test_linear_probe_on_camvid_with_a_random_vit():
    if not (CAMVID / "train" / "masks").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (expected ../shared/data/camvid next to the repository)")
    import timm

    from dse_tune.data import ImageFolderDataset, build_probe_set

    train = build_probe_set(ImageFolderDataset(CAMVID, splits="train"), size=32, image_size=32)
    test = build_probe_set(ImageFolderDataset(CAMVID, splits="test"), size=16, image_size=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
            num_classes=0, pretrained=False,
        )
    result = linear_probe_model(model, train, test, num_classes=11)
    assert 0.0 <= result.miou <= 1.0 and 0.0 <= result.pixel_accuracy <= 1.0
    assert len(result.per_class_iou) == 11
    assert result.num_pixels == int((test.masks != IGNORE_INDEX).sum())
    # Sky and road are large and easy: even random patch features beat chance on them.
    assert result.pixel_accuracy > 1 / 11


def test_evaluation_in_chunks_counts_every_pixel_once():
    from dse_tune.evaluation.linear_probe import _PREDICT_CHUNK, confusion_matrix, evaluate_linear_probe, fit_linear_probe

    generator = torch.Generator().manual_seed(0)
    images = 2 * _PREDICT_CHUNK + 2  # three chunks, the last of two images
    tokens = torch.randn(images, 16, 8, generator=generator)
    masks = torch.randint(0, 3, (images, 8, 8), generator=generator)
    masks[-1, 0, 0] = 255
    probe = fit_linear_probe(tokens[:20], masks[:20], 3)
    whole = confusion_matrix(probe.predict(tokens, (8, 8)), masks, 3)
    result = evaluate_linear_probe(probe, tokens, masks)
    assert torch.equal(result.confusion, whole) and result.num_pixels == images * 64 - 1
