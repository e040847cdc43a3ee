"""``dse-tune track`` on a real ``dse-tune pretrain`` run, and on bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from PIL import Image

from dse_tune.cli import main
from dse_tune.decision import run_choice
from dse_tune.runs import read_run
from dse_tune.ssl.pretrain import pretrain
from tests.tiny_configs import TINY_DINO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The timm ViT that dse_tune.ssl builds for TINY_VIT (the teacher backbone is scored).
TINY_ARCH = ["--arch", "vit_tiny_patch16_224", "--arch-kwargs",
             '{"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}']
#: TINY_DINO's probe set: 16 of 16 synthetic scenes, seed 0.
TINY_PROBE = ["--data", "synthetic", "--probe-size", "16", "--synthetic-size", "16"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("pretrained") / "run"
        pretrain({**TINY_DINO, "epochs": 3}, run_dir, logger=False, enable_progress_bar=False, accelerator="cpu")
    finally:
        torch.set_num_threads(previous)
    return run_dir


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    return errors[0]


def test_track_reproduces_the_monitored_history_and_select_reads_it(tiny_run, tmp_path, capsys):
    out = tmp_path / "tracked"
    args = ["track", str(tiny_run / "checkpoints"), "--format", "lightning", *TINY_ARCH, *TINY_PROBE,
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "lightning:found: 30/30 weights" in printed and "epoch=0002.ckpt" in printed
    monitored, tracked = read_run(tiny_run), read_run(out)
    # the table shows each value's noise; the last line the one decision and how sure it is
    assert "+-noise" in printed and all(e.noise is not None for e in tracked.evaluations)
    choice = run_choice(tracked)
    kept = f"kept: epoch {tracked.evaluations[choice.chosen].epoch} [{choice.verdict}]: {choice.reason}"
    assert kept in printed.splitlines()
    assert [e.epoch for e in tracked.evaluations] == [e.epoch for e in monitored.evaluations] == [0, 1, 2]
    assert [e.global_step for e in tracked.evaluations] == [e.global_step for e in monitored.evaluations]
    for ours, theirs in zip(tracked.evaluations, monitored.evaluations, strict=True):
        assert ours.dse == pytest.approx(theirs.dse, abs=1e-6)
        for name, value in theirs.components.items():
            assert ours.components[name] == pytest.approx(value, abs=1e-6)
        assert tracked.checkpoint_path(ours).resolve() == monitored.checkpoint_path(theirs).resolve()
    summary = json.loads((out / "tracking.json").read_text())
    assert len(summary["dse_standardized"]) == 3 and summary["candidates"]
    assert (out / "dse_curve.png").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["tracked"]["format_found"] == "lightning:found" and config["probe_size"] == 16
    # incremental: nothing new to score
    assert main(args) == 0
    assert "scored 0 new checkpoint(s); the run holds 3" in capsys.readouterr().out
    assert main(["select", str(out)]) == 0
    # a tracked run's checkpoint is scored again with the run's probe and arch
    assert main(["score", "--checkpoint", str(tiny_run / "checkpoints" / "epoch=0001.ckpt"), "--run", str(out),
                 "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["dse"]["score"] == pytest.approx(monitored.dse[1], abs=1e-6)
    # validate reads the tracked run's checkpoints the way the tracker read them
    assert main(["validate", str(out), "--data", "synthetic", "--out", str(tmp_path / "validation"),
                 "--images-per-split", "16"]) == 0
    report = json.loads((tmp_path / "validation" / "validation.json").read_text())
    rows = report["checkpoints"]
    assert len(rows) == 3 and all(row["miou"] is not None and row["problem"] is None for row in rows)
    assert [row["dse_monitored"] for row in rows] == pytest.approx(monitored.dse, abs=1e-6)


def test_other_settings_on_the_same_run_folder_are_refused(tiny_run, tmp_path, capsys):
    out = tmp_path / "tracked"
    base = ["track", str(tiny_run / "checkpoints" / "epoch=0000.ckpt"), *TINY_ARCH, "--out", str(out), "--no-progress"]
    assert main([*base, *TINY_PROBE]) == 0
    assert main([*base, "--data", "synthetic", "--probe-size", "8", "--synthetic-size", "16"]) == 2
    assert "probe_size 16 (now 8)" in _error_line(capsys)


def test_a_wrong_architecture_is_the_loaders_error(tiny_run, tmp_path, capsys):
    wrong = ["--arch", "vit_tiny_patch16_224", "--arch-kwargs", '{"img_size": 32, "patch_size": 8, "depth": 2}']
    code = main(["track", str(tiny_run / "checkpoints"), *wrong, *TINY_PROBE, "--out", str(tmp_path / "t"),
                 "--no-progress"])
    assert code == 2
    line = _error_line(capsys)
    assert "does not fit the architecture" in line and "epoch=0000.ckpt" in line
    assert "cls_token: checkpoint (1, 1, 64), model (1, 1, 192)" in line  # both shapes
    assert '"embed_dim": 64, "depth": 2, "patch_size": 8' in line  # the kwargs that fit, from the shapes


def test_a_truncated_checkpoint_is_recorded_as_failed(tiny_run, tmp_path, capsys):
    folder = tmp_path / "ckpts"
    shutil.copytree(tiny_run / "checkpoints", folder)
    (folder / "last.ckpt").unlink()
    broken = folder / "epoch=0001.ckpt"
    broken.write_bytes(broken.read_bytes()[:5000])
    out = tmp_path / "t"
    assert main(["track", str(folder), *TINY_ARCH, *TINY_PROBE, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err  # the others are scored, then the exit status says one failed
    assert "error: 1 of 3 checkpoint(s) failed (1 unreadable checkpoint)" in err
    run = read_run(out)
    assert [e.epoch for e in run.evaluations] == [0, 1, 2]
    assert math.isnan(run.dse[1]) and run.evaluations[1].failure.startswith("unreadable checkpoint")
    assert all(math.isfinite(v) for v in (run.dse[0], run.dse[2])) and not run.stopped_early


def test_a_folder_without_checkpoints_is_one_error_line(tmp_path, capsys):
    assert main(["track", str(tmp_path), *TINY_ARCH, "--out", str(tmp_path / "t")]) == 2
    assert "no checkpoint files" in _error_line(capsys)


def test_a_corrupted_image_is_found_before_scoring(tiny_run, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 60, 10, 10)).save(images / f"{i}.png")
    (images / "3.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "t"
    code = main(["track", str(tiny_run / "checkpoints"), *TINY_ARCH, "--data", str(images), "--probe-size", "4",
                 "--out", str(out), "--no-progress"])
    assert code == 2
    assert "3.png" in _error_line(capsys)
    assert not (out / "dse_history.json").exists()


def test_a_misfit_file_in_a_folder_fails_the_command_after_the_others_are_scored(tiny_run, tmp_path, capsys):
    import torch

    folder = tmp_path / "ckpts"
    shutil.copytree(tiny_run / "checkpoints", folder)
    (folder / "last.ckpt").unlink()
    misfit = torch.load(folder / "epoch=0001.ckpt", weights_only=True)
    misfit["state_dict"] = {k: v for k, v in misfit["state_dict"].items() if ".blocks.1." not in k}
    torch.save(misfit, folder / "epoch=0001.ckpt")
    out = tmp_path / "t"
    assert main(["track", str(folder), *TINY_ARCH, *TINY_PROBE, "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "error: 1 of 3 checkpoint(s) failed (1 does not fit the architecture)" in captured.err
    run = read_run(out)
    assert run.evaluations[1].failure.startswith("does not fit the architecture")
    assert all(math.isfinite(v) for v in (run.dse[0], run.dse[2]))


def test_list_archs_prints_the_presets_with_their_sources(capsys):
    assert main(["track", "--list-archs"]) == 0
    out = capsys.readouterr().out
    assert "mocov3_vits16" in out and "num_heads=12" in out and "vits.py:115" in out
    assert "ijepa_vith14" in out and "fc_norm=False" in out


def test_track_without_checkpoints_or_out_is_one_error_line(tmp_path, capsys):
    assert main(["track", *TINY_ARCH, "--out", str(tmp_path / "t")]) == 2
    assert "CHECKPOINTS is required" in _error_line(capsys)


def test_files_with_no_epoch_anywhere_are_an_error_not_an_empty_run(tmp_path, capsys):
    """A lone state dict named without an epoch was left out as a 'latest' copy and the
    command exited 0 having scored nothing."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2,
                              num_heads=2, num_classes=0)
    torch.save(model.state_dict(), tmp_path / "final.pth")
    out = tmp_path / "tracked"
    assert main(["track", str(tmp_path / "final.pth"), *TINY_ARCH, *TINY_PROBE, "--out", str(out), "--no-progress"]) == 2
    line = _error_line(capsys)
    assert "final.pth" in line and "--epoch-regex" in line
    assert not out.exists()
