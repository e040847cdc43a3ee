"""``dse-tune score`` on the embedded scenes, a timm ConvNet, and bad arguments."""

from __future__ import annotations

import json
import math

import pytest

from dse_tune.cli import main


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


def test_weights_without_a_timm_model_is_refused():
    with pytest.raises(SystemExit, match="--weights needs --timm"):
        main(["score", "--weights", "w.pth"])


def test_a_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        main(["score", "--checkpoint", str(tmp_path / "nope.ckpt")])
