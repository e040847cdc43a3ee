"""``dse-tune score`` on the embedded scenes, a timm ConvNet, and bad arguments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dse_tune.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (see tests/conftest.py)


def test_scores_a_random_tiny_vit_on_synthetic_scenes(tmp_path, capsys):
    out = tmp_path / "score.json"
    assert main(["score", "--probe-size", "16", "--global-clusters", "8", "--baselines", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["probe"]["images"] == 16
    assert report["dse"]["num_images"] == 16 and report["dse"]["global_clusters"] == 8
    assert all(math.isfinite(report["dse"][k]) for k in ("score", "inter", "intra_image", "intra_batch", "dim"))
    assert report["rankme_tokens"] > report["rankme_pooled"] > 1
    assert "dse" in capsys.readouterr().out


def test_scores_a_timm_convnet_last_stage(tmp_path):
    out = tmp_path / "score.json"
    args = ["score", "--timm", "resnet18", "--image-size", "64", "--probe-size", "16", "--global-clusters", "8"]
    assert main(args + ["--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dse"]["channels"] == 512 and report["dse"]["num_tokens"] == 4  # 64 px / 32 = 2 x 2


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_weights_without_a_timm_model_is_refused(capsys):
    assert main(["score", "--weights", "w.pth"]) == 2
    assert "--weights needs --timm" in _error_line(capsys)


def test_a_missing_checkpoint_names_the_file(tmp_path, capsys):
    assert main(["score", "--checkpoint", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt" in _error_line(capsys)


def test_a_foreign_checkpoint_is_one_error_line(tmp_path, capsys):
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    assert main(["score", "--checkpoint", str(not_a_checkpoint)]) == 2
    assert _error_line(capsys).startswith(f"error: --checkpoint {not_a_checkpoint}: cannot read checkpoint")


def test_a_missing_data_folder_names_the_folder(tmp_path, capsys):
    assert main(["score", "--data", str(tmp_path / "nowhere")]) == 2
    assert _error_line(capsys) == f"error: --data {tmp_path / 'nowhere'}: no such folder"


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_a_truncated_image_names_the_file(tmp_path, capsys, suffix):
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for name in ("a", "b"):
        Image.fromarray(pixels).save(folder / f"{name}.{suffix}")
    whole = (folder / f"b.{suffix}").read_bytes()
    (folder / f"b.{suffix}").write_bytes(whole[: len(whole) // 2])
    args = ["score", "--data", str(folder), "--image-size", "32", "--probe-size", "2"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert f"b.{suffix}" in line and "--data" in line


def test_weights_that_leave_most_of_the_model_random_are_refused(tmp_path, capsys):
    weights = tmp_path / "conv1.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, weights)
    args = ["score", "--timm", "resnet18", "--weights", str(weights), "--image-size", "64", "--probe-size", "16"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert f"--weights {weights}:" in line and "does not fit the architecture" in line and "missing" in line
    assert "bn1.weight" in line  # the first missing keys are named

    assert main(args[:3] + ["--weights", str(tmp_path / "none.pth")]) == 2
    assert "none.pth: no such file" in _error_line(capsys)


def test_weights_of_the_model_are_loaded_strictly(tmp_path, capsys):
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    state = model.state_dict()
    del state["layer4.1.bn2.num_batches_tracked"]
    torch.save(state, tmp_path / "resnet18.pth")
    out = tmp_path / "score.json"
    args = ["score", "--timm", "resnet18", "--weights", str(tmp_path / "resnet18.pth"), "--image-size", "64"]
    args += ["--probe-size", "16", "--global-clusters", "8", "--json", str(out)]
    assert main(args) == 2  # one weight absent: exact or refuse
    assert "layer4.1.bn2.num_batches_tracked" in _error_line(capsys)
    assert main(args + ["--allow-missing", "*.num_batches_tracked"]) == 0
    assert math.isfinite(json.loads(out.read_text())["dse"]["score"])
    assert "1 allowed missing" in capsys.readouterr().out


def test_timm_random_initialisation_is_seeded_says_so_and_honours_arch_kwargs(tmp_path, capsys):
    args = ["score", "--timm", "vit_tiny_patch16_224", "--arch-kwargs", '{"patch_size": 8, "depth": 2}',
            "--image-size", "32", "--probe-size", "16", "--global-clusters", "8"]
    scores = []
    for name in ("a.json", "b.json"):
        assert main(args + ["--json", str(tmp_path / name)]) == 0
        scores.append(json.loads((tmp_path / name).read_text())["dse"])
    assert scores[0]["score"] == scores[1]["score"]  # the same command, the same number
    assert scores[0]["num_tokens"] == 16  # patch 8 from --arch-kwargs: 4 x 4 tokens
    assert "random initialisation (seed 0)" in capsys.readouterr().out


def test_timm_weights_from_an_official_layout_are_read_with_format_and_prefix(tmp_path, capsys):
    import timm

    kwargs = '{"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}'
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, **json.loads(kwargs))
    checkpoint = {"state_dict": {f"net.{k}": v for k, v in model.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "w.pth")
    args = ["score", "--timm", "vit_tiny_patch16_224", "--arch-kwargs", kwargs, "--weights", str(tmp_path / "w.pth"),
            "--probe-size", "16", "--global-clusters", "8"]
    assert main(args + ["--format", "state_dict:state_dict", "--prefix", "net."]) == 0
    assert "prefix 'net.'" in capsys.readouterr().out
    assert main(args + ["--format", "mae"]) == 2
    assert "format 'mae' reads model" in _error_line(capsys)


def test_a_run_checkpoint_is_scored_on_the_runs_own_probe_set(tmp_path, capsys):
    from dse_tune.runs import read_run
    from dse_tune.ssl.pretrain import pretrain
    from tests.tiny_configs import TINY_DINO

    run_dir = tmp_path / "run"
    pretrain({**TINY_DINO, "epochs": 2}, run_dir, logger=False, enable_progress_bar=False, accelerator="cpu")
    out = tmp_path / "score.json"
    assert main(["score", "--checkpoint", str(run_dir / "checkpoints" / "epoch=0001.ckpt"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["dse"]["score"] == pytest.approx(read_run(run_dir).dse[1], abs=1e-6)
