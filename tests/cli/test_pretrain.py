"""``dse-tune pretrain``: config precedence, the run folder, --resume, and errors."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from dse_tune.cli import main as cli_main
from dse_tune.cli.pretrain import add_arguments, config_from_args
from dse_tune.runs import read_run
from dse_tune.pretrain_config import PretrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models (see tests/conftest.py)


def test_cli_writes_the_run_folder_and_resumes_from_the_right_epoch(tmp_path):
    run_dir = tmp_path / "run"
    common = ["--no-progress", "--accelerator", "cpu", "--set", "synthetic_size=16", "--set", "head_output_dim=128"]
    sizes = ["--embed-dim", "64", "--depth", "2", "--heads", "2", "--batch-size", "8", "--probe-size", "16"]
    code = cli_main(["pretrain", "--method", "mocov3", "--data", "synthetic", "--epochs", "2", "--out", str(run_dir), *sizes, *common])
    assert code == 0
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"epoch=0000.ckpt", "epoch=0001.ckpt", "last.ckpt"}
    before = read_run(run_dir).to_dict()["evaluations"]

    code = cli_main(["pretrain", "--out", str(run_dir), "--resume", "--epochs", "3", *common])
    assert code == 0
    after = read_run(run_dir).to_dict()["evaluations"]
    assert after[:2] == before, "the resumed run keeps the evaluations it continues from"
    assert [(r["index"], r["epoch"], r["global_step"]) for r in after] == [(0, 0, 2), (1, 1, 4), (2, 2, 6)]
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    # The resumed fit trained epoch 2 only (its own log folder).
    with open(run_dir / "logs" / "version_1" / "metrics.csv", newline="") as handle:
        assert {r["epoch"] for r in csv.DictReader(handle)} == {"2"}


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_config_precedence_file_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: ibot\nlr: 0.001\nembed_dim: 96\nsplits: [train, val]\n")
    args = _parse(["--out", str(tmp_path), "--config", str(path), "--lr", "0.002", "--set", "embed_dim=128", "--set", "teacher_temp=0.07", "--heads", "4"])
    config = config_from_args(args)
    assert (config.method, config.lr, config.embed_dim, config.num_heads, config.teacher_temp) == ("ibot", 0.002, 128, 4, 0.07)
    assert config.splits == ("train", "val")
    assert PretrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_errors_name_the_field(tmp_path, capsys):
    assert cli_main(["pretrain", "--method", "simclr", "--out", str(tmp_path)]) == 2
    assert "method must be one of" in capsys.readouterr().err
    assert cli_main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli_main(["pretrain", "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "config.json does not exist" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["pretrain", "--out", str(tmp_path), "--set", "no_equals_sign"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: --set no_equals_sign: expected FIELD=VALUE, got 'no_equals_sign'"]
    assert cli_main(["pretrain", "--out", str(tmp_path), "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.yaml" in err[0]
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        cli_main(["pretrain", "--out", str(tmp_path), "--threads", "0"])
    assert exited.value.code == 2 and "--threads: must be an integer >= 1" in capsys.readouterr().err


def test_the_summary_reports_the_finite_peak_after_a_first_nan(tmp_path, monkeypatch, capsys):
    import math

    import dse_tune.metrics.tolerant

    scripted = [math.nan, 0.4, 0.8]

    def fake_dse(tokens, seed=0, **kwargs):
        value = scripted.pop(0)
        return type("Result", (), dict(score=value, inter=value, intra_image=0.0, intra_batch=0.0, dim=0.0))()

    monkeypatch.setattr(dse_tune.metrics.tolerant, "dse", fake_dse)
    sizes = ["--embed-dim", "32", "--depth", "2", "--heads", "2", "--batch-size", "8", "--probe-size", "16"]
    argv = ["pretrain", "--method", "dino", "--epochs", "3", "--out", str(tmp_path), "--no-progress",
            "--accelerator", "cpu", "--set", "synthetic_size=16", "--set", "head_output_dim=128", *sizes]
    with pytest.warns(UserWarning, match="is NaN"):
        assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "best DSE 0.8000 at epoch 2 (checkpoints/epoch=0002.ckpt)" in out
    # the kept checkpoint is the one decision's (what `dse-tune select` keeps), said with its reason
    kept = next(line for line in out.splitlines() if line.startswith("kept: "))
    assert kept.startswith(f"kept: {tmp_path / 'checkpoints' / 'epoch=0002.ckpt'} (")


def test_device_flags_are_config_fields_and_set_works_too(tmp_path, capsys):
    args = _parse(["--out", str(tmp_path), "--devices", "2", "--strategy", "ddp", "--precision", "bf16-mixed",
                   "--accelerator", "cpu", "--dse-global-batch", "true"])
    config = config_from_args(args)
    assert (config.devices, config.strategy, config.precision, config.accelerator, config.dse_global_batch) == (
        2, "ddp", "bf16-mixed", "cpu", True)
    config = config_from_args(_parse(["--out", str(tmp_path), "--set", "precision=32", "--set", "devices=auto"]))
    assert (config.precision, config.devices) == ("32", "auto")
    assert cli_main(["pretrain", "--out", str(tmp_path / "r"), "--accelerator", "cpu", "--precision", "16-mixed"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "precision '16-mixed' needs a CUDA GPU" in err[0]


def test_numbers_in_exponent_notation_are_numbers_from_every_source(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\nmin_lr: 1E-7\n")
    args = _parse(["--out", str(tmp_path), "--config", str(path), "--set", "dse_beta=1e-2", "--set", "weight_decay=4E-2",
                   "--set", "degradation={warmup: 2, min_drop: 5e-2}"])
    config = config_from_args(args)
    assert (config.lr, config.min_lr, config.dse_beta, config.weight_decay) == (1e-4, 1e-7, 1e-2, 4e-2)
    assert all(isinstance(value, float) for value in (config.lr, config.min_lr, config.dse_beta, config.weight_decay))
    assert config.degradation == {"warmup": 2, "min_drop": 0.05}


@pytest.mark.parametrize(("setting", "words"), [
    ("lr=fast", ["--set lr=fast", "lr", "expected a number", "'fast'"]),
    ("epochs=2.5", ["epochs", "expected an integer", "2.5"]),
    ("lrr=0.1", ["--set lrr=0.1", "unknown PretrainConfig field(s) ['lrr']", "did you mean 'lr'"]),
    ("global_crop_scale=[0.3]", ["global_crop_scale", "a list of 2 numbers"]),
    ("probe_image_size=96x", ["probe_image_size", "'96x' is not N, HxW"]),
])
def test_a_bad_value_is_one_line_naming_the_field_the_value_and_the_type(tmp_path, capsys, setting, words):
    assert cli_main(["pretrain", "--out", str(tmp_path / "r"), "--set", setting]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and all(word in err[0] for word in words), err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as exited:  # the flag's own type: argparse's usage error
        cli_main(["pretrain", "--out", str(tmp_path / "r"), "--probe-image-size", "96x"])
    assert exited.value.code == 2 and "--probe-image-size: image size '96x'" in capsys.readouterr().err


def test_a_bad_yaml_value_names_the_file_and_the_key(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("method: dino\nlr: fast\n")
    assert cli_main(["pretrain", "--out", str(tmp_path / "r"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {path}: lr: expected a number, got 'fast' (a string)"]


def test_a_corrupt_image_is_one_error_line_and_leaves_no_run_folder(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    data = tmp_path / "photos"
    data.mkdir()
    for number in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * number, dtype=np.uint8)).save(data / f"{number}.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(data / "whole.png")
    (data / "3.png").write_bytes((data / "whole.png").read_bytes()[:3000])  # truncated
    (data / "whole.png").unlink()
    code = cli_main(["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "2",
                     "--probe-size", "2", "--no-progress", "--accelerator", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot read image") and "3.png" in err[0], err
    assert not (tmp_path / "run").exists()


def test_set_lr_in_exponent_notation_runs_with_a_rectangular_probe(tmp_path):
    run_dir = tmp_path / "run"
    argv = ["pretrain", "--method", "dino", "--epochs", "1", "--out", str(run_dir), "--no-progress", "--accelerator", "cpu",
            "--embed-dim", "32", "--depth", "2", "--heads", "2", "--batch-size", "8", "--probe-size", "16",
            "--set", "synthetic_size=16", "--set", "head_output_dim=128", "--set", "lr=1e-4",
            "--probe-image-size", "24x40"]
    assert cli_main(argv) == 0
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["lr"] == 1e-4 and recorded["probe_image_size"] == [24, 40]
    assert len(read_run(run_dir).evaluations) == 1
    # An older run folder's config (no probe_image_size) still reads, as the training size.
    del recorded["probe_image_size"]
    assert PretrainConfig.from_dict(recorded).resolved_probe_image_size == (32, 32)
