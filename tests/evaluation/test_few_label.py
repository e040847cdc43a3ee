"""Few-label confirmation on real tiny checkpoints: a planted better candidate wins; a
difference inside the spread of a few scored images does not; pooled splits are named."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dse_tune.evaluation.few_label import (
    FewLabelScores,
    bootstrap_mious,
    confirm_candidates,
    few_label_miou,
    load_few_label_split,
    miou_of,
    select_with_labels,
)
from dse_tune.runs import RunRecord, load_sweep
from dse_tune.selection import select_best, select_run
from tests.evaluation.tiny_runs import write_labelled_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_colour_regions(root, count=16, size=32, seed=0):
    """images/ + masks/: two large regions of two of three colours, the class is the
    colour. Labels a 3-epoch tiny model can tell apart (the synthetic scenes' small
    objects are below its 4x4 token grid: every tiny model scores near chance there)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[220, 40, 40], [40, 40, 220], [40, 200, 40]])
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for index in range(count):
        cut, order = rng.integers(8, 25), rng.permutation(3)[:2]
        mask = np.zeros((size, size), np.uint8)
        mask[:, :cut], mask[:, cut:] = order[0], order[1]
        image = np.clip(colours[mask] + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{index:03d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{index:03d}.png")


def _destroy_weights(checkpoint):
    """Zero every weight: constant tokens, a probe that learns nothing (DSE history kept)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["state_dict"] = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, checkpoint)


@pytest.fixture
def planted(sweep, tmp_path):
    """The tiny beta sweep with beta=0's checkpoints destroyed: by labels beta=0.1 is
    better, while the label-free default keeps the smallest beta."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for checkpoint in (copy / "beta=0.0" / "checkpoints").glob("*.ckpt"):
        _destroy_weights(checkpoint)
    labelled = tmp_path / "labelled"
    write_colour_regions(labelled)
    return copy, labelled


def test_the_split_is_disjoint_and_within_budget(tmp_path):
    write_labelled_folder(tmp_path)
    split = load_few_label_split(tmp_path, image_size=32, label_images=8, splits="train")
    assert split.labels_used == 8 and len(split.fit) == len(split.score) == 4
    assert split.warnings == () and split.description["pooled_splits"] == []
    assert not set(split.description["fit_indices"]) & set(split.description["score_indices"])
    assert split.fit.masks.shape == (4, 32, 32)
    drawn = load_few_label_split(tmp_path, image_size=32, label_images=8, splits="train", seed=1)
    assert drawn.description["fit_indices"] != split.description["fit_indices"]
    with pytest.raises(ValueError, match="label_images must be an integer >= 2"):
        load_few_label_split(tmp_path, image_size=32, label_images=1)
    (tmp_path / "plain" / "images").mkdir(parents=True)
    shutil.copy(next((tmp_path / "train" / "images").iterdir()), tmp_path / "plain" / "images")
    with pytest.raises(ValueError, match="no masks"):
        load_few_label_split(tmp_path / "plain", image_size=32)


@pytest.mark.slow
def test_few_label_confirmation_picks_the_planted_better_candidate(planted):
    sweep, labelled = planted
    runs = load_sweep(sweep)
    assert select_best(runs).best.name == "beta=0.0"  # label-free: the smallest beta
    scores = confirm_candidates(runs, labelled, label_images=16, progress=False)
    shortlist = {str(r.checkpoint_path(r.evaluations[p])) for r in runs for p in select_run(r).candidates}
    assert set(scores.values) == shortlist and scores.problems == {}
    assert scores.labels_used == 16
    result = select_best(runs, confirmed=scores.values)
    assert (result.best.name, result.basis) == ("beta=0.1", "few_label")
    destroyed = [v for k, v in scores.values.items() if "beta=0.0" in k]
    assert result.best.chosen_confirmed > max(destroyed) + 0.3
    # Every value comes with its spread over the 8 scored images; the gap is far beyond it.
    assert scores.scored_images == 8 and set(scores.spread) == set(scores.values)
    assert all(math.isfinite(v) and v >= 0 for v in scores.spread.values())
    decided = select_with_labels(runs, scores)
    assert (decided.best.name, decided.basis, decided.parameters["few_label_verdict"]) == ("beta=0.1", "few_label", "decided")
    difference, error = decided.parameters["few_label_difference"], decided.parameters["few_label_difference_se"]
    assert difference > 2 * error > 0 and "mIoU points over the label-free choice" in decided.reason


@pytest.mark.slow
def test_cli_confirm_with_records_labels_used(planted, capsys):
    from dse_tune.cli import main

    sweep, labelled = planted
    code = main(["select", str(sweep), "--confirm-with", str(labelled), "--label-images", "8", "--no-plot"])
    assert code == 0
    data = json.loads((sweep / "selection.json").read_text())
    assert (data["basis"], data["best_trial"]) == ("few_label", "beta=0.1")
    assert data["parameters"]["labels_used"] == data["parameters"]["label_images"] == 8
    # 4 scored images, yet destroyed weights are far below: decided beyond the spread, which is recorded.
    assert data["parameters"]["few_label_verdict"] == "decided" and data["parameters"]["few_label_scored_images"] == 4
    assert all(v >= 0 for v in data["parameters"]["few_label_spread"].values())
    assert "(basis: few_label)" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_names_the_pooled_splits(planted, tmp_path, capsys):
    from dse_tune.cli import main

    sweep, _ = planted
    write_labelled_folder(tmp_path / "splits")  # train/ and val/, no --label-split
    assert main(["select", str(sweep), "--confirm-with", str(tmp_path / "splits"), "--label-images", "8",
                 "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "warning: --confirm-with" in printed and "the splits train, val pooled together" in printed


def test_a_model_is_scored_on_the_held_back_half(tiny_run, tmp_path):
    from dse_tune.runs import read_run
    from dse_tune.ssl.methods import load_checkpoint

    write_labelled_folder(tmp_path / "labelled")
    run = read_run(tiny_run)
    model = load_checkpoint(run.checkpoint_path(run.evaluations[-1]))
    split = load_few_label_split(tmp_path / "labelled", image_size=32, label_images=8, splits="train")
    miou = few_label_miou(model, split)
    assert 0.0 <= miou <= 1.0


def _confusions(correct_per_image, total=100):
    """(images, 2, 2) confusions: image i has correct_per_image[i] of ``total`` pixels right."""
    return np.stack([np.array([[c // 2, total // 2 - c // 2], [total // 2 - (c - c // 2), c - c // 2]])
                     for c in correct_per_image]).astype(np.int64)


def _scores(per_image):
    values = {key: float(miou_of(c.sum(0))) for key, c in per_image.items()}
    samples = bootstrap_mious(per_image)
    spread = {key: float(samples[key].std(ddof=1)) for key in per_image}
    images = next(iter(per_image.values())).shape[0]
    return FewLabelScores(values, 2 * images, spread=spread, scored_images=images, per_image=per_image)


def _two_runs():
    """Label-free, beta=0 wins (smallest beta); the labels are to say whether beta=0.1 is better."""
    return [
        RunRecord.from_values("beta=0", [0.1, 0.5, 0.3], beta=0.0, checkpoints=["/x/a0", "/x/a1", "/x/a2"]),
        RunRecord.from_values("beta=0.1", [0.1, 0.6, 0.4], beta=0.1, checkpoints=["/x/b0", "/x/b1", "/x/b2"]),
    ]


def test_a_few_label_winner_inside_the_spread_is_refused():
    runs = _two_runs()
    assert select_best(runs).best_checkpoint.name == "a1"
    # 4 scored images that disagree: b1 is ahead on average but not on every image.
    per_image = {"/x/a1": _confusions([60, 80, 40, 70]), "/x/b1": _confusions([75, 60, 65, 72])}
    scores = dataclasses.replace(_scores(per_image), warnings=("labels pooled from the splits train, val",))
    assert scores.values["/x/b1"] > scores.values["/x/a1"]
    difference, error = scores.difference("/x/b1", "/x/a1")
    assert difference == pytest.approx(scores.values["/x/b1"] - scores.values["/x/a1"]) and 0 < difference < 2 * error
    result = select_with_labels(runs, scores)
    assert result.best_checkpoint.name == "a1" and result.basis == "conservative"
    assert result.parameters["few_label_verdict"] == "within_noise"
    assert "few-label mIoU cannot tell beta=0.1, epoch 1 from the label-free choice (beta=0, epoch 1)" in result.reason
    assert "kept the label-free choice" in result.warnings[-1] and "4 scored images" in result.warnings[-1]
    assert "labels pooled from the splits train, val" in result.warnings  # the scores' own warnings are passed on


def test_a_consistent_few_label_gain_is_a_winner():
    runs = _two_runs()
    # 16 images, b1 ahead by 8-12 pixels on every one of them.
    base = [50 + (i * 7) % 30 for i in range(16)]
    per_image = {"/x/a1": _confusions(base), "/x/b1": _confusions([c + 8 + i % 5 for i, c in enumerate(base)])}
    result = select_with_labels(runs, _scores(per_image))
    assert result.best_checkpoint.name == "b1" and result.basis == "few_label"
    assert result.parameters["few_label_verdict"] == "decided"


def test_pooling_the_splits_without_a_label_split_is_a_warning_naming_them(tmp_path):
    write_labelled_folder(tmp_path)
    split = load_few_label_split(tmp_path, image_size=32, label_images=8)
    assert split.description["pooled_splits"] == ["train", "val"]
    (warning,) = split.warnings
    assert "no --label-split given, so the labelled images come from the splits train, val pooled together" in warning


def test_the_few_label_probe_is_built_at_the_runs_probe_image_size(tmp_path):
    # validate and the label check read probe_image_size, else image_size: so does few-label
    from dse_tune.evaluation.few_label import _image_size

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"image_size": 32, "probe_image_size": "24x32"}))
    run = RunRecord.from_values("r", [0.1], path=run_dir)
    assert _image_size(run, None) == (24, 32)
    assert _image_size(run, "native") == "native"  # the caller's size wins
    (run_dir / "config.json").write_text(json.dumps({"image_size": 32}))
    assert _image_size(run, None) == (32, 32)
    (run_dir / "config.json").write_text(json.dumps({"method": "dino"}))
    with pytest.raises(ValueError, match="run r: config.json: .*neither probe_image_size nor image_size; pass image_size"):
        _image_size(run, None)
    write_labelled_folder(tmp_path / "labelled")
    split = load_few_label_split(tmp_path / "labelled", image_size=(24, 32), label_images=4, splits="train")
    assert split.fit.masks.shape[1:] == (24, 32)


def test_the_few_label_description_keys_sizes_as_the_validation_report_does():
    from dse_tune.typed_config import image_size_key

    assert [image_size_key(s) for s in ((32, 32), 32, (24, 32), "native")] == ["32", "32", "24x32", "native"]
