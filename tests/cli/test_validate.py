"""``dse-tune validate`` on a tiny real run: report keys, correlations, selection, files,
and exit statuses 0, 1 and 2."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from dse_tune.cli.main import main
from dse_tune.evaluation.report import SCORE_NAMES
from tests.evaluation.tiny_runs import pretrain_validation_run, write_labelled_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real 3-epoch DINO run with 3 evaluations and their checkpoints."""
    return pretrain_validation_run(tmp_path_factory.mktemp("runs"))


def check_tau_table(table: dict) -> None:
    assert set(table) == set(SCORE_NAMES)
    for name, value in table.items():
        assert value is None or -1.0 <= value <= 1.0, (name, value)


def test_validate_a_run_on_synthetic_scenes(tiny_run, tmp_path, capsys):
    out = tmp_path / "validation"
    code = main(["validate", str(tiny_run), "--data", "synthetic", "--out", str(out), "--images-per-split", "32", "--no-progress"])
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


def test_validate_a_sweep_pools_runs_and_survives_a_missing_checkpoint(tiny_run, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for name in ("a", "b"):
        shutil.copytree(tiny_run, sweep / name)
    (sweep / "b" / "checkpoints" / "epoch=0001.ckpt").unlink()
    out = tmp_path / "out"
    # --probe-images: the option's old name still works, with a warning.
    code = main(["validate", str(sweep), "--data", "synthetic", "--out", str(out), "--probe-images", "16", "--no-progress", "--no-plot"])
    assert code == 0
    assert "warning: --probe-images is deprecated" in capsys.readouterr().err
    report = json.loads((out / "validation.json").read_text())
    assert sorted(report["per_run"]) == ["a", "b"]
    assert report["correlations"]["dse"]["n"] == 5  # 3 + 2 checkpoints scored by the linear probe, pooled
    missing = [row for row in report["checkpoints"] if row["run"] == "b" and row["index"] == 1]
    assert missing[0]["miou"] is None and "does not exist" in missing[0]["problem"]
    assert any("does not exist" in warning for warning in report["warnings"])
    assert "aggregate" in report["selection"]
    check_tau_table(report["kendall_tau_mean_over_runs"])
    assert not (out / "validation.png").exists()


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
    err = capsys.readouterr().err
    assert "--num-classes" in err
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    if not torch.cuda.is_available():  # a device the machine lacks: refused before any work
        assert main(["validate", str(tiny_run), "--data", "synthetic", "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
        assert capsys.readouterr().err == "error: --device cuda: CUDA is not available on this machine\n"
    assert main(["validate", str(tiny_run), "--data", "synthetic", "--out", str(tmp_path / "o"), "--device", "gpu0"]) == 2
    assert capsys.readouterr().err.startswith("error: --device gpu0: not a torch device")


def test_validate_at_another_probe_size_scores_rectangles(tiny_run, tmp_path, capsys):
    out = tmp_path / "validation"
    arguments = ["validate", str(tiny_run), "--data", "synthetic", "--out", str(out), "--images-per-split", "16"]
    assert main([*arguments, "--image-size", "48x64", "--no-progress", "--no-plot"]) == 0
    report = json.loads((out / "validation.json").read_text())
    assert list(report["data"]) == ["48x64"] and report["data"]["48x64"]["image_size"] == [48, 64]
    assert all(0.0 <= row["miou"] <= 1.0 and math.isfinite(row["dse"]) for row in report["checkpoints"])
    with pytest.raises(SystemExit) as exited:
        main([*arguments, "--image-size", "48y64"])
    assert exited.value.code == 2 and "--image-size: image size '48y64'" in capsys.readouterr().err


def test_no_checkpoint_scored_is_exit_status_1_with_the_files_written(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "checkpoints")
    out = tmp_path / "out"
    arguments = ["validate", str(run), "--data", "synthetic", "--out", str(out), "--images-per-split", "8"]
    assert main([*arguments, "--no-progress", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "error: the linear probe could score no checkpoint (see 'warnings' in the report)"
    report = json.loads((out / "validation.json").read_text())
    assert all(row["miou"] is None and "does not exist" in row["problem"] for row in report["checkpoints"])
