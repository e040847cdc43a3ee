"""Few-label confirmation on real tiny checkpoints: a planted better candidate wins."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dse_tune.evaluation.few_label import confirm_candidates, few_label_miou, load_few_label_split
from dse_tune.runs import load_sweep
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


def test_cli_confirm_with_records_labels_used(planted, capsys):
    from dse_tune.cli import main

    sweep, labelled = planted
    code = main(["select", str(sweep), "--confirm-with", str(labelled), "--label-images", "8", "--no-plot"])
    assert code == 0
    data = json.loads((sweep / "selection.json").read_text())
    assert (data["basis"], data["best_trial"]) == ("few_label", "beta=0.1")
    assert data["parameters"]["labels_used"] == data["parameters"]["label_images"] == 8
    assert "(basis: few_label)" in capsys.readouterr().out


def test_a_model_is_scored_on_the_held_back_half(tiny_run, tmp_path):
    from dse_tune.runs import read_run
    from dse_tune.ssl.methods import load_checkpoint

    write_labelled_folder(tmp_path / "labelled")
    run = read_run(tiny_run)
    model = load_checkpoint(run.checkpoint_path(run.evaluations[-1]))
    split = load_few_label_split(tmp_path / "labelled", image_size=32, label_images=8, splits="train")
    miou = few_label_miou(model, split)
    assert 0.0 <= miou <= 1.0
