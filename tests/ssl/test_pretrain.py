from __future__ import annotations

import csv
import json
import math

import lightning.pytorch as pl
import pytest
import torch

import dse_tune.metrics.tolerant
from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.runs import EVALUATION_KEYS, read_run
from dse_tune.ssl.config import PretrainConfig
from dse_tune.data import SyntheticScenes, build_probe_set
from dse_tune.ssl.methods import load_checkpoint
from dse_tune.ssl.pretrain import pretrain
from tests.ssl.conftest import tiny_config


class SeesDSE(pl.Callback):
    """An extra callback, as a sweep would add: records the DSE it sees each epoch."""

    def __init__(self):
        self.seen = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(float(trainer.callback_metrics["dse"]))


@pytest.mark.parametrize("method", ["dino", "ibot", "mae", "mocov3"])
def test_each_method_trains_scores_and_checkpoints(tmp_path, method):
    config = tiny_config(method)
    extra = SeesDSE()
    result = pretrain(config, tmp_path, callbacks=[extra], enable_progress_bar=False, accelerator="cpu")

    rows = result.history["evaluations"]
    assert len(rows) == 2 and [r["epoch"] for r in rows] == [0, 1] and [r["global_step"] for r in rows] == [2, 4]
    assert all(tuple(r) == EVALUATION_KEYS and math.isfinite(r["dse"]) for r in rows)
    assert extra.seen == pytest.approx([r["dse"] for r in rows]), "extra callbacks see the DSE of their epoch"
    assert read_run(tmp_path).to_dict()["evaluations"] == rows
    with open(tmp_path / "dse_history.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert json.loads((tmp_path / "config.json").read_text())["method"] == method
    assert (tmp_path / "dse_curve.png").stat().st_size > 0
    assert result.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert result.chosen_checkpoint in {tmp_path / r["checkpoint"] for r in rows}

    with open(next((tmp_path / "logs").glob("version_*/metrics.csv")), newline="") as handle:
        logged = list(csv.DictReader(handle))
    losses = [float(r["train/ssl_loss"]) for r in logged if r.get("train/ssl_loss")]
    assert losses and all(math.isfinite(v) for v in losses)

    # A checkpoint loads back into the same network: same features, same DSE as recorded.
    probe = build_probe_set(SyntheticScenes(16, 64, seed=0), size=16, image_size=32).images
    last = load_checkpoint(tmp_path / rows[-1]["checkpoint"])
    assert torch.equal(last.dense_tokens(probe), result.module.eval().dense_tokens(probe))
    first = load_checkpoint(tmp_path / rows[0]["checkpoint"])
    assert dse_tune.dse(first.dense_tokens(probe), seed=config.probe_seed).score == pytest.approx(rows[0]["dse"], rel=1e-5)
    assert torch.load(tmp_path / rows[0]["checkpoint"], weights_only=False)["dse"]["dse"] == rows[0]["dse"]


def test_dse_regularizer_enters_the_loss(tmp_path):
    config = tiny_config("dino", dse_beta=0.5, epochs=1)
    result = pretrain(config, tmp_path, enable_progress_bar=False, accelerator="cpu")
    with open(next((tmp_path / "logs").glob("version_*/metrics.csv")), newline="") as handle:
        logged = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    for row in logged:
        # loss = ssl_loss - beta * DSE(student patch tokens)
        assert float(row["train/dse_reg"]) == pytest.approx(-0.5 * float(row["train/student_dse"]), rel=1e-4)
        assert float(row["train/loss"]) == pytest.approx(float(row["train/ssl_loss"]) + float(row["train/dse_reg"]), rel=1e-4)
    assert result.module.regularizer.weight == 0.5


def test_early_stopping_fires_on_a_scripted_dse_after_the_warm_up(tmp_path, monkeypatch):
    scripted = [0.3, 0.6, 0.9, 1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1]
    remaining = list(scripted)

    def fake_dse(tokens, seed=0, **kwargs):
        value = remaining.pop(0)
        # DSE moves through dim, its cluster term is flat: a ranking the verdict trusts
        # (dse_tune.reliability), so the kept checkpoint is the rule's peak
        return type("Result", (), dict(score=value, inter=0.5, intra_image=0.5, intra_batch=0.5, dim=value))()

    monkeypatch.setattr(dse_tune.metrics.tolerant, "dse", fake_dse)  # where the tracker scores
    degradation = dict(warmup=4, patience=2, min_drop=0.1)
    config = tiny_config("dino", epochs=10, early_stop=True, degradation=degradation, synthetic_size=8)
    result = pretrain(config, tmp_path, enable_progress_bar=False, accelerator="cpu")

    stop_index = first_stop_index(scripted, DegradationRule(**degradation))
    assert stop_index == 5 >= degradation["warmup"] - 1
    assert len(result.history["evaluations"]) == stop_index + 1
    assert result.epochs_completed == stop_index + 1 < config.epochs
    assert result.stopped_early and "degraded" in result.stop_reason
    assert result.chosen_checkpoint.name == "epoch=0003.ckpt"
    assert read_run(tmp_path).to_dict()["stopped_early"] is True


def test_config_errors_name_the_field(tmp_path):
    # The command-line half of these checks is tests/cli/test_pretrain.py.
    with pytest.raises(ValueError, match=r"image_size \(30\) must be a multiple of patch_size \(8\)"):
        PretrainConfig(image_size=30).validate()
    with pytest.raises(ValueError, match=r"unknown PretrainConfig field\(s\) \['learning_rate'\]"):
        PretrainConfig.from_dict({"learning_rate": 0.1})
    # A probe set DSE cannot score fails before training, naming the setting.
    with pytest.raises(ValueError, match=r"DSE cannot score the probe set: 1 images \(probe_size 1\).*at least 2 images"):
        pretrain(tiny_config("dino", probe_size=1), tmp_path / "small", enable_progress_bar=False, accelerator="cpu")
    assert not (tmp_path / "small").exists(), "a refused run leaves no run folder behind"


@pytest.mark.parametrize("probe_image_size", ["24x40", "native"])
def test_the_recorded_probe_set_is_the_one_the_monitor_scored(tmp_path, probe_image_size):
    from dse_tune.data import probe_set_for
    from dse_tune.metrics import score_tokens
    from dse_tune.runs import read_config

    config = tiny_config("dino", epochs=1, probe_image_size=probe_image_size)
    result = pretrain(config, tmp_path, enable_progress_bar=False, accelerator="cpu")
    recorded = read_config(tmp_path)
    # The resolved size is recorded: synthetic scenes are rendered at 64 px, so native is 64x64.
    assert recorded["probe_image_size"] == ([24, 40] if probe_image_size == "24x40" else "native")
    probe = probe_set_for(recorded)
    assert probe.image_size == ((24, 40) if probe_image_size == "24x40" else (64, 64))
    # Rebuilt from config.json alone, the probe set gives the DSE the monitor recorded.
    module = load_checkpoint(tmp_path / result.history["evaluations"][0]["checkpoint"]).eval()
    with torch.no_grad():
        tokens = module.dense_tokens(probe.images)
    rescored = score_tokens(tokens, seed=config.probe_seed)
    assert rescored.result.score == pytest.approx(result.history["evaluations"][0]["dse"], abs=1e-5)


def test_a_first_nan_evaluation_leaves_the_finite_peak_in_the_summary(tmp_path, monkeypatch, capsys):
    scripted = [math.nan, 0.4, 0.8, 0.6]

    def fake_dse(tokens, seed=0, **kwargs):
        value = scripted.pop(0)
        return type("Result", (), dict(score=value, inter=value, intra_image=0.0, intra_batch=0.0, dim=0.0))()

    monkeypatch.setattr(dse_tune.metrics.tolerant, "dse", fake_dse)
    config = tiny_config("dino", epochs=4, synthetic_size=8)  # no early stop: the run goes on past the NaN
    with pytest.warns(UserWarning, match="is NaN"):
        result = pretrain(config, tmp_path, enable_progress_bar=False, accelerator="cpu")
    assert result.best_dse == 0.8
    assert result.chosen_checkpoint.name == "epoch=0002.ckpt"
    assert read_run(tmp_path).best.index == 2


def test_device_settings_are_config_fields_validated_and_recorded(tmp_path):
    with pytest.raises(ValueError, match=r"precision must be one of \('32-true', '32', 'bf16-mixed', '16-mixed'\), got 'fp8'"):
        PretrainConfig(precision="fp8").validate()
    with pytest.raises(ValueError, match=r"devices must be a positive count, -1 \(all\), 'auto' or a list of device indices, got 0"):
        PretrainConfig(devices=0).validate()
    assert PretrainConfig.from_dict({"precision": 32, "devices": "2"}).validate().precision == "32"
    assert PretrainConfig.from_dict({"devices": [0, 1]}).validate().devices == [0, 1]
    with pytest.raises(ValueError, match=r"strategy 'dpp' is not a Lightning strategy"):
        pretrain(tiny_config("dino", strategy="dpp"), tmp_path / "typo", enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"precision '16-mixed' needs a CUDA GPU .* use precision 'bf16-mixed'"):
        pretrain(tiny_config("dino", precision="16-mixed"), tmp_path / "fp16", enable_progress_bar=False, accelerator="cpu")


def test_bf16_mixed_precision_trains_on_cpu_with_the_regulariser_in_float32(tmp_path):
    config = tiny_config("dino", precision="bf16-mixed", dse_beta=0.5, epochs=1)
    result = pretrain(config, tmp_path, enable_progress_bar=False, accelerator="cpu")
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "bf16-mixed"
    assert math.isfinite(result.history["evaluations"][0]["dse"])
    with open(next((tmp_path / "logs").glob("version_*/metrics.csv")), newline="") as handle:
        logged = [r for r in csv.DictReader(handle) if r.get("train/student_dse")]
    assert logged and all(math.isfinite(float(r["train/student_dse"])) for r in logged)
