"""The checkpoint tracker library: watching a live folder, per-layer tables, the validate loader."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

import dse_tune.tracker
from dse_tune.checkpoints import build_architecture
from dse_tune.metrics.tolerant import TokenScore
from dse_tune.runs import RunFormatError, read_run
from dse_tune.checkpoint_tracking import (
    CheckpointTracker, ProbeSettings, ReadSettings, model_loader_for_run, track_checkpoints, watch_checkpoints,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
READ = ReadSettings("vit_tiny_patch16_224", KWARGS)
PROBE = ProbeSettings(probe_size=16, synthetic_size=16)


def _weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return {"model": build_architecture("vit_tiny_patch16_224", KWARGS).state_dict(), "epoch": seed}


def _writer(folder, epochs, half_written_epoch):
    """Writes one checkpoint every 0.3 s, atomically (temp file, then rename), except one
    that is first left half-written for a while."""
    for epoch in epochs:
        target = folder / f"checkpoint-{epoch}.pth"
        temporary = folder / f"writing-{epoch}.part"  # not a checkpoint name: never collected
        torch.save(_weights(epoch), temporary)
        if epoch == half_written_epoch:
            data = temporary.read_bytes()
            target.write_bytes(data[: len(data) // 2])
            time.sleep(0.8)
        os.replace(temporary, target)
        time.sleep(0.3)


def test_watch_scores_each_new_checkpoint_once_in_order_and_alerts(tmp_path, monkeypatch):
    scripted = iter([0.2, 0.5, 0.9, 1.0, 0.6, 0.5, 0.4, 0.3])  # a peak, then a planted degradation
    calls = []

    def scorer(tokens, **kwargs):
        calls.append(tokens.shape)
        value = next(scripted)
        return TokenScore(value, value, 0.1, 0.1, value)

    monkeypatch.setattr(dse_tune.tracker, "score_tokens", scorer)
    folder = tmp_path / "live"
    folder.mkdir()
    writer = threading.Thread(target=_writer, args=(folder, range(8), 2), daemon=True)
    writer.start()
    alerts, scored = [], []
    result = watch_checkpoints(
        folder, tmp_path / "run", READ, PROBE, interval=0.1, timeout=30, max_checkpoints=8,
        on_scored=scored.append, alert=alerts.append, warn=lambda line: None,
    )
    writer.join()
    assert [e.epoch for e in scored] == list(range(8)) and len(calls) == 8
    assert all(e.failure is None for e in result.run.evaluations)
    assert len(alerts) == 1 and "at epoch 6" in alerts[0] and "peak at epoch 3" in alerts[0]
    assert read_run(tmp_path / "run").stopped_early


def test_layer_all_writes_a_table_and_validate_can_reload_the_run(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for epoch in (0, 1):
        torch.save(_weights(epoch), folder / f"checkpoint-{epoch}.pth")
    raw = track_checkpoints(folder, tmp_path / "raw", ReadSettings("vit_tiny_patch16_224", KWARGS, layer="all",
                                                                   layer_norm=False), PROBE, progress=False)
    assert raw.layers["layers"] == ["block 0", "block 1", "last+norm"]
    read = ReadSettings("vit_tiny_patch16_224", KWARGS, layer="all")  # the paper's: final norm on every block
    result = track_checkpoints(folder, tmp_path / "run", read, PROBE, progress=False)
    assert result.layers["layers"] == ["block 0+norm", "last+norm"]
    assert [len(row["dse"]) for row in result.layers["checkpoints"]] == [2, 2]
    assert result.layers["checkpoints"][0]["dse"][0] != raw.layers["checkpoints"][0]["dse"][0]
    assert (tmp_path / "run" / "layers.json").is_file()
    load = model_loader_for_run(tmp_path / "run")
    model = load(folder / "checkpoint-1.pth", map_location="cpu")
    assert torch.equal(model.pos_embed, _weights(1)["model"]["pos_embed"])


def test_a_corrupt_layers_file_is_an_error_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "layers.json").write_text('{"layers": [')  # a run whose per-layer table was cut short
    with pytest.raises(RunFormatError, match=r"layers\.json: not valid JSON"):
        CheckpointTracker(run_dir, ReadSettings("vit_tiny_patch16_224", KWARGS, layer="all"), PROBE)
