"""``dse-tune pretrain``: config precedence, the run folder, --resume, and errors."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from dse_tune.cli import main as cli_main
from dse_tune.cli.pretrain import add_arguments, config_from_args
from dse_tune.runs import read_run
from dse_tune.ssl.config import PretrainConfig

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
    assert capsys.readouterr().err.splitlines() == ["error: --set expects FIELD=VALUE, got 'no_equals_sign'"]
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
    assert "best DSE 0.8000 at epoch 2 (checkpoints/epoch=0002.ckpt)" in capsys.readouterr().out


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
