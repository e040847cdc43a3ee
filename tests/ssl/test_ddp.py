"""Pretraining under DDP: 2 CPU processes (gloo), launched the way a user launches them.

Lightning's ``strategy="ddp"`` re-runs the command line in one more process per extra
device, so each test runs a real command in a subprocess: ``python -m dse_tune.cli
pretrain ... --devices 2 --accelerator cpu --strategy ddp`` or a small script calling
:func:`dse_tune.ssl.pretrain.pretrain`. Each run takes tens of seconds (two Python
processes import torch and Lightning, then set up gloo): marked slow, still run in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dse_tune.runs import read_config, read_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY_FLAGS = [
    "--embed-dim", "32", "--depth", "2", "--heads", "2", "--batch-size", "4", "--probe-size", "16",
    "--set", "synthetic_size=16", "--set", "head_output_dim=64", "--set", "head_hidden_dim=32",
    "--set", "head_bottleneck_dim=16", "--set", "decoder_dim=32", "--set", "num_local_crops=1",
    "--set", "warmup_epochs=0", "--no-progress", "--threads", "1",
]


def _environment() -> dict[str, str]:
    # One thread per process: two processes share the test machine's cores.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, f"exit {completed.returncode}\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    return completed


@pytest.mark.parametrize("method", ["dino", "ibot", "mae", "mocov3"])
def test_every_method_pretrains_on_two_cpu_processes_with_ddp(method, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["pretrain", "--method", method, "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp",
            "--epochs", "1", "--out", str(run_dir), *TINY_FLAGS]
    if method == "mae":
        argv += ["--dse-beta", "0.1", "--dse-global-batch", "true"]  # the regulariser's global mode too
    completed = _run([sys.executable, "-m", "dse_tune.cli", *argv], cwd=tmp_path)
    output = completed.stdout + completed.stderr
    assert "not used in producing the loss" not in output
    assert "sync_dist" not in output, "the monitor's epoch-level metrics must not trigger Lightning's DDP warning"
    assert completed.stdout.count("run folder:") == 1, "only rank 0 prints the summary"
    record = read_run(run_dir)
    assert len(record.evaluations) == 1 and record.evaluations[0].global_step == 2  # 16 images / 2 ranks / batch 4
    assert (run_dir / "checkpoints" / "epoch=0000.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    config = read_config(run_dir)
    assert (config["devices"], config["strategy"], config["accelerator"]) == (2, "ddp", "cpu")


SCRIPT = '''
import json, sys
from pathlib import Path

import lightning.pytorch as pl
import torch.distributed as dist

import dse_tune.metrics.tolerant as tolerant
from dse_tune.degradation import DegradationDecision
from dse_tune.integrations.lightning import DSEMonitor
from dse_tune.ssl.pretrain import pretrain

out, mode = Path(sys.argv[1]), sys.argv[2]
SCRIPTED = [0.5, 0.9, 0.3, 0.2, 0.1, 0.1]
scored = []


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def scripted_dse(tokens, seed=0, **kwargs):
    # Every call is a probe scoring; the file counts them per process.
    scored.append(tokens.shape[0])
    with open(out / f"scored-rank{rank()}.txt", "a") as handle:
        handle.write(f"{tuple(tokens.shape)}\\n")
    value = SCRIPTED[len(scored) - 1]
    return type("Result", (), dict(score=value, inter=value, intra_image=0.0, intra_batch=0.0, dim=0.0))()


tolerant.dse = scripted_dse


def listener(evaluation, decision):
    with open(out / f"listened-rank{rank()}.txt", "a") as handle:
        handle.write(f"{evaluation.index}\\n")
    if mode == "listener" and evaluation.index == 1:
        return DegradationDecision(True, "the listener prunes", None, None, evaluation.index + 1)
    return None


class RecordEnd(pl.Callback):
    def on_train_end(self, trainer, module):
        monitor = next(c for c in trainer.callbacks if isinstance(c, DSEMonitor))
        end = dict(step=trainer.global_step, epoch=trainer.current_epoch, evaluations=len(monitor.evaluations),
                   stopped=monitor.tracker.stopped, reason=monitor.tracker.run.stop_reason)
        (out / f"end-rank{trainer.global_rank}.json").write_text(json.dumps(end))


config = dict(method="dino", embed_dim=32, depth=2, num_heads=2, head_hidden_dim=32, head_bottleneck_dim=16,
              head_output_dim=64, num_local_crops=1, batch_size=4, synthetic_size=16, probe_size=15,
              warmup_epochs=0, epochs=5, early_stop=mode == "rule",
              degradation=dict(warmup=2, patience=1, min_drop=0.1),
              accelerator="cpu", devices=2, strategy="ddp")
pretrain(config, out / "run", listeners=[listener], callbacks=[RecordEnd()], enable_progress_bar=False)
'''


@pytest.mark.parametrize("mode", ["rule", "listener"])
def test_ddp_scores_the_probe_once_per_evaluation_and_every_rank_stops_at_the_same_step(mode, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    completed = _run([sys.executable, str(script), str(tmp_path), mode], cwd=tmp_path)
    assert "sync_dist" not in completed.stdout + completed.stderr
    # The rule fires at the third evaluation (0.3 after a peak of 0.9); the listener
    # stops at the second. Epochs have 2 steps (16 images, 2 ranks, batch 4).
    stop_index = 2 if mode == "rule" else 1
    ends = [json.loads((tmp_path / f"end-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ends[0] == ends[1], "both ranks stop at the same step with the same history"
    assert ends[0]["step"] == 2 * (stop_index + 1) and ends[0]["evaluations"] == stop_index + 1
    assert ends[0]["stopped"] and ("prunes" in ends[0]["reason"]) == (mode == "listener")
    # The probe was scored once per evaluation, on rank 0 only, on all of its images
    # (15: the shards of 8 + 7 are gathered and the padding dropped).
    assert (tmp_path / "scored-rank0.txt").read_text().splitlines() == ["(15, 16, 32)"] * (stop_index + 1)
    assert not (tmp_path / "scored-rank1.txt").exists()
    assert (tmp_path / "listened-rank0.txt").read_text().split() == [str(i) for i in range(stop_index + 1)]
    assert not (tmp_path / "listened-rank1.txt").exists(), "listeners run on rank 0 only"
    record = read_run(tmp_path / "run")
    assert [e.index for e in record.evaluations] == list(range(stop_index + 1)), "one history row per evaluation"
    assert record.stopped_early
