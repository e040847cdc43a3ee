"""``dse-tune validate`` on a tiny real run: report keys, correlations, selection, files."""

from __future__ import annotations

import ast
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dse_tune.cli import main
from dse_tune.validate import SCORE_NAMES, correlations, selection_summary
from tests import tiny_configs

TINY_DINO = {**tiny_configs.TINY_DINO, "batch_size": 16, "epochs": 3, "synthetic_size": 64, "eval_every_n_epochs": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 3-epoch DINO run with 3 evaluations and their checkpoints."""
    from dse_tune.ssl.pretrain import pretrain

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("runs") / "dino"
        pretrain(TINY_DINO, run_dir, enable_progress_bar=False, accelerator="cpu", logger=False)
    finally:
        torch.set_num_threads(previous)
    return run_dir


def check_tau_table(table: dict) -> None:
    assert set(table) == set(SCORE_NAMES)
    for name, value in table.items():
        assert value is None or -1.0 <= value <= 1.0, (name, value)


def test_validate_a_run_on_synthetic_scenes(tiny_run, tmp_path, capsys):
    out = tmp_path / "validation"
    code = main(["validate", str(tiny_run), "--data", "synthetic", "--out", str(out), "--probe-images", "32", "--no-progress"])
    assert code == 0
    report = json.loads((out / "validation.json").read_text())
    for key in ("kendall_tau", "spearman", "per_run", "checkpoints", "selection", "protocol", "data"):
        assert key in report
    check_tau_table(report["kendall_tau"])
    check_tau_table(report["spearman"])
    assert list(report["per_run"]) == ["dino"]
    check_tau_table(report["per_run"]["dino"]["kendall_tau"])

    rows = report["checkpoints"]
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert row["problem"] is None
        assert 0.0 <= row["miou"] <= 1.0 and len(row["per_class_iou"]) == 6
        for name in ("dse", "dse_standardized", "dse_monitored", "rankme_tokens", "rankme_pooled", "alpha_req_tokens"):
            assert math.isfinite(row[name]), name
        assert row["dse_images"] == 32
    selection = report["selection"]
    for key in ("selected", "last", "best"):
        assert {"epoch", "miou"} <= set(selection[key])
    assert selection["best"]["miou"] == max(row["miou"] for row in rows)
    assert selection["last"]["epoch"] == 2
    assert selection["gain_vs_last"] == pytest.approx(selection["selected"]["miou"] - selection["last"]["miou"])
    assert sum(row["selected"] for row in rows) == 1
    # Train and evaluation scenes are disjoint.
    data = report["data"]["32"]
    assert not set(data["train"]["indices"]) & set(data["evaluation"]["indices"])
    assert (out / "validation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dse_standardized" in capsys.readouterr().out


def test_validate_a_sweep_pools_runs_and_survives_a_missing_checkpoint(tiny_run, tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("a", "b"):
        shutil.copytree(tiny_run, sweep / name)
    (sweep / "b" / "checkpoints" / "epoch=0001.ckpt").unlink()
    out = tmp_path / "out"
    code = main(["validate", str(sweep), "--data", "synthetic", "--out", str(out), "--probe-images", "16", "--no-progress", "--no-plot"])
    assert code == 0
    report = json.loads((out / "validation.json").read_text())
    assert sorted(report["per_run"]) == ["a", "b"]
    assert report["correlations"]["dse"]["n"] == 5  # 3 + 2 probed checkpoints, pooled
    missing = [row for row in report["checkpoints"] if row["run"] == "b" and row["index"] == 1]
    assert missing[0]["miou"] is None and "does not exist" in missing[0]["problem"]
    assert any("does not exist" in warning for warning in report["warnings"])
    assert "aggregate" in report["selection"]
    check_tau_table(report["kendall_tau_mean_over_runs"])
    assert not (out / "validation.png").exists()


def write_labelled_folder(root: Path) -> None:
    """SPLIT/images + SPLIT/masks from synthetic scenes, with an ignored (255) border."""
    from dse_tune.ssl.data import SyntheticScenes

    scenes = SyntheticScenes(num_images=24, image_size=40, seed=3)
    for split, indices in (("train", range(0, 16)), ("val", range(16, 24))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in indices:
            image, mask = scenes.render(index)
            mask = mask.copy()
            mask[:4] = 255
            Image.fromarray(image).save(root / split / "images" / f"{index:03d}.png")
            Image.fromarray(mask.astype(np.uint8), mode="L").save(root / split / "masks" / f"{index:03d}.png")


def test_validate_on_a_labelled_folder_infers_the_classes(tiny_run, tmp_path):
    data = tmp_path / "data"
    write_labelled_folder(data)
    out = tmp_path / "out"
    code = main(["validate", str(tiny_run), "--data", str(data), "--eval-split", "val", "--out", str(out), "--no-progress", "--no-plot"])
    assert code == 0
    report = json.loads((out / "validation.json").read_text())
    description = report["data"]["32"]
    assert description["train"]["images"] == 16 and description["evaluation"]["images"] == 8
    assert description["evaluation"]["split"] == "val"
    assert description["num_classes_inferred"] and description["num_classes"] <= 6
    assert all(row["miou"] is not None for row in report["checkpoints"])


def test_bad_inputs_exit_with_status_2_and_a_message(tiny_run, tmp_path, capsys):
    assert main(["validate", str(tiny_run), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty"), "--data", "synthetic", "--out", str(tmp_path / "o")]) == 2
    assert "no run with DSE evaluations" in capsys.readouterr().err
    data = tmp_path / "data"
    write_labelled_folder(data)
    arguments = ["validate", str(tiny_run), "--data", str(data), "--eval-split", "val", "--num-classes", "2"]
    assert main([*arguments, "--out", str(tmp_path / "o")]) == 2
    assert "--num-classes" in capsys.readouterr().err


def test_selection_summary_compares_the_dse_choice_with_last_and_best():
    monitored = [0.1, 0.5, 0.3, 0.2, 0.4, 0.35]
    mious = [0.20, 0.40, 0.35, 0.30, 0.45, None]  # the last checkpoint was not probed
    rows = [{"index": i, "epoch": 10 * i + 9, "miou": m} for i, m in enumerate(mious)]
    summary = selection_summary(monitored, rows, window=1, top=3)
    assert [c["index"] for c in summary["candidates"]] == [1, 4]
    assert summary["selected"]["epoch"] == 19 and summary["selected"]["miou"] == 0.40
    assert summary["last"]["index"] == 4  # the last probed checkpoint
    assert summary["best"]["index"] == 4 and summary["best_candidate"]["index"] == 4
    assert summary["gain_vs_last"] == pytest.approx(-0.05)
    assert summary["gap_to_best"] == pytest.approx(0.05)


def test_correlations_are_none_when_undefined():
    rows = [{"dse": 1.0, "rankme_tokens": float(i), "miou": 0.1 * i} for i in range(4)]
    table = correlations(rows, scores=("dse", "rankme_tokens", "alpha_req_tokens"))
    assert table["dse"]["kendall_tau"] is None  # constant score
    assert table["rankme_tokens"]["kendall_tau"] == pytest.approx(1.0)
    assert table["rankme_tokens"]["spearman"] == pytest.approx(1.0)
    assert table["alpha_req_tokens"] == {"kendall_tau": None, "kendall_p": None, "spearman": None, "spearman_p": None, "n": 0}


def test_module_imports_only_the_standard_library_at_top_level():
    source = Path(__file__).resolve().parents[1] / "dse_tune" / "validate.py"
    tree = ast.parse(source.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, name
