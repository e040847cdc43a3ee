"""Held-out rescoring on a real tiny sweep: two runs (beta 0 and 0.1) pretrained on
synthetic scenes, 3 epochs each, tiny ViTs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from dse_tune import cli
from dse_tune.rescore import (
    PROBE_FILENAME,
    RESCORED_FILENAME,
    build_held_out_probe,
    held_out_probe_for,
    image_fingerprint,
    main,
    monitoring_probe_fingerprints,
    rescore_sweep,
)
from dse_tune.selection import (
    Evaluation,
    RunRecord,
    load_rescored,
    load_sweep,
    select_best,
    select_run,
)
from dse_tune.ssl.data import SyntheticScenes, build_probe_set, open_dataset
from tests import tiny_configs

TINY = {**tiny_configs.TINY_DINO, "epochs": 3, "synthetic_size": 32, "probe_size": 8}
HELD_OUT = 16  # of the 32 scenes, 8 are the monitoring probe


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    from dse_tune.ssl.pretrain import pretrain

    root = tmp_path_factory.mktemp("sweep")
    for beta in (0.0, 0.1):
        pretrain(
            {**TINY, "dse_beta": beta},
            root / f"beta={beta}",
            logger=False,
            enable_progress_bar=False,
            accelerator="cpu",
        )
    return root


def candidate_checkpoints(root: Path) -> set[str]:
    paths = set()
    for run in load_sweep(root):
        for position in select_run(run).candidates:
            paths.add(str(run.checkpoint_path(run.evaluations[position])))
    return paths


def test_every_candidate_gets_a_finite_deterministic_score(sweep, tmp_path):
    scores = ("dse", "rankme", "alpha_req")
    first = rescore_sweep(
        sweep, probe_size=HELD_OUT, scores=scores, out=tmp_path / "a.json", progress=False
    )
    second = rescore_sweep(
        sweep, probe_size=HELD_OUT, scores=scores, out=tmp_path / "b.json", progress=False
    )
    assert set(first) == candidate_checkpoints(sweep) and len(first) >= 2
    assert all(math.isfinite(value) for value in first.values())
    assert first == second  # same images, same seed, same checkpoints: same numbers
    rows = json.loads((tmp_path / "a.json").read_text())
    assert rows == [
        {**row, "seconds": rows[i]["seconds"]}
        for i, row in enumerate(json.loads((tmp_path / "b.json").read_text()))
    ]
    for row in rows:
        assert row["problem"] is None
        assert all(
            math.isfinite(row[key]) for key in ("dse", "inter", "dim", "rankme", "alpha_req")
        )
        assert row["probe"] == rows[0]["probe"] and row["seed"] == 0
    # The held-out score is not the monitored one (other images).
    assert all(row["dse"] != row["monitored_dse"] for row in rows)
    by_rankme = rescore_sweep(
        sweep, probe_size=HELD_OUT, select_by="rankme", out=tmp_path / "c.json", progress=False
    )
    assert by_rankme == {
        str(Path(tmp_path, row["checkpoint"]).resolve()): row["rankme"] for row in rows
    }


def test_held_out_images_are_disjoint_from_the_monitoring_probe(sweep):
    runs = load_sweep(sweep)
    probe = held_out_probe_for(runs, size=HELD_OUT)
    dataset = open_dataset("synthetic", synthetic_size=TINY["synthetic_size"], seed=TINY["seed"])
    monitoring = build_probe_set(dataset, size=TINY["probe_size"], image_size=TINY["image_size"])

    assert len(probe) == HELD_OUT and probe.images.shape == (HELD_OUT, 3, 32, 32)
    assert not set(probe.indices) & set(monitoring.indices)
    for image in probe.images:
        assert not any(torch.equal(image, other) for other in monitoring.images)
    held_out_fingerprints = {image_fingerprint(dataset.load_image(i)) for i in probe.indices}
    assert not held_out_fingerprints & monitoring_probe_fingerprints(runs[0].config)
    assert probe.checked_runs == ("beta=0.0", "beta=0.1") and probe.unchecked_runs == ()
    assert probe.excluded == TINY["probe_size"] and probe.from_training_data is True
    # The same images in the same order every time.
    again = held_out_probe_for(runs, size=HELD_OUT)
    assert again.indices == probe.indices and torch.equal(again.images, probe.images)
    assert again.fingerprint == probe.fingerprint


class ShuffledScenes(SyntheticScenes):
    """The runs' scenes under other indices: exclusion must work by content."""

    def load_image(self, index):
        # Rotated by 4: the evenly spread picks land on probe scenes (every 4th).
        return super().load_image((index + 4) % self.num_images)

    def describe(self):
        return "the same scenes, rotated"


def test_probe_images_are_excluded_by_content_under_any_index(sweep):
    runs = load_sweep(sweep)
    shuffled = ShuffledScenes(num_images=TINY["synthetic_size"], seed=TINY["seed"])
    probe = held_out_probe_for(runs, data=shuffled, size=HELD_OUT)
    monitoring = monitoring_probe_fingerprints(runs[0].config)
    chosen = {image_fingerprint(shuffled.load_image(i)) for i in probe.indices}
    assert len(probe) == HELD_OUT and not chosen & monitoring
    assert probe.excluded > 0 and probe.from_training_data is None


def test_select_best_with_rescoring_returns_an_existing_checkpoint(sweep, tmp_path):
    out = tmp_path / RESCORED_FILENAME
    rescored = rescore_sweep(sweep, probe_size=HELD_OUT, out=out, progress=False)
    runs = load_sweep(sweep)
    result = select_best(runs, rescored=rescored)
    assert result.compare == "rescored" and result.best is not None
    assert result.best_checkpoint.is_file()
    assert result.best.chosen_rescored == max(t.chosen_rescored for t in result.trials)
    # The file says the same to the selector (paths relative to the file).
    from_file = select_best(runs, rescored=load_rescored(out))
    assert from_file.best_checkpoint == result.best_checkpoint
    description = json.loads((tmp_path / PROBE_FILENAME).read_text())
    assert description["held_out_probe"]["size"] == HELD_OUT
    assert description["settings"]["seed"] == 0


def test_command_line_rescore_then_select(sweep, tmp_path, capsys):
    out = tmp_path / "held_out.json"
    assert main([str(sweep), "--probe-size", "8", "--out", str(out), "--no-progress"]) == 0
    assert "next: dse-tune select" in capsys.readouterr().out
    assert (
        cli.main(
            ["select", str(sweep), "--rescored", str(out), "--out", str(tmp_path), "--no-plot"]
        )
        == 0
    )
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["compare"] == "rescored" and Path(selection["best_checkpoint"]).is_file()


def test_a_broken_checkpoint_is_reported_and_the_rest_scored(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    run = load_sweep(copy)[0]
    broken = run.checkpoint_path(run.evaluations[select_run(run).candidates[0]])
    broken.write_bytes(b"not a checkpoint")
    rescored = rescore_sweep(copy, probe_size=HELD_OUT, progress=False)
    assert str(broken) not in rescored
    assert set(rescored) == candidate_checkpoints(copy) - {str(broken)}
    rows = {row["checkpoint"]: row for row in json.loads((copy / RESCORED_FILENAME).read_text())}
    bad = rows[str(broken.relative_to(copy))]
    assert bad["dse"] is None and "cannot score" in bad["problem"]


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
        held_out_probe_for([record("a")], size=4)


def test_runs_on_different_data_need_an_explicit_held_out_set(tmp_path):
    folders = [record("a", data=str(tmp_path / "a")), record("b", data=str(tmp_path / "b"))]
    with pytest.raises(ValueError, match="runs trained on different or unknown data .* pass data="):
        held_out_probe_for(folders, size=4)
    runs = [record("a", seed=0), record("b", seed=1)]
    # Synthetic scenes of several seeds: a family none of them trained on.
    unseen = held_out_probe_for(runs, size=4)
    assert "seed 2" in unseen.source and unseen.from_training_data is False
    with pytest.raises(
        ValueError, match=r"different or no image sizes \(\[32, 64\]\); pass image_size="
    ):
        held_out_probe_for([record("a"), record("b", image_size=64)], data="synthetic", size=4)
    fresh = SyntheticScenes(num_images=8, seed=99)  # scenes no run trained on
    probe = held_out_probe_for(runs, data=fresh, size=4)
    assert len(probe) == 4 and probe.checked_runs == ("a", "b")


def test_build_held_out_probe_arguments():
    scenes = SyntheticScenes(num_images=6, image_size=32)
    with pytest.raises(ValueError, match="size .* must be a positive integer, got 0"):
        build_held_out_probe(scenes, size=0, image_size=32)
    with pytest.warns(UserWarning, match="only 4 held-out images available"):
        probe = build_held_out_probe(scenes, size=8, image_size=32, exclude_indices=[0, 5])
    assert probe.indices == (1, 2, 3, 4)


def test_runs_whose_probe_cannot_be_rebuilt_are_named():
    no_fields = RunRecord("from-elsewhere", (Evaluation(0, 1.0),), {"image_size": 32})
    fresh = SyntheticScenes(num_images=8, seed=99)
    with pytest.warns(
        UserWarning, match=r"monitoring probe set of 1 run\(s\) \(from-elsewhere; first"
    ):
        probe = held_out_probe_for([record("a"), no_fields], data=fresh, size=4)
    assert probe.checked_runs == ("a",) and probe.unchecked_runs == ("from-elsewhere",)
