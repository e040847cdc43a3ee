from __future__ import annotations

import csv
import json
import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dse_tune
from dse_tune.degradation import DegradationRule, first_stop_index
from dse_tune.integrations.lightning import DSEMonitor
from dse_tune.runs import EVALUATION_KEYS, read_run

REPO = Path(__file__).resolve().parents[2]
# PatchModel keeps a frozen submodule in eval mode on purpose (like an EMA teacher).
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:Found 1 module\(s\) in eval mode"),
    pytest.mark.usefixtures("one_torch_thread"),
]




class PatchModel(pl.LightningModule):
    """A user's own model: a patchifying conv trained to reconstruct its input."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.Dropout(0.1))
        self.decoder = nn.ConvTranspose2d(16, 3, 4, stride=4)
        self.frozen = nn.Dropout(0.5).eval()  # like a frozen EMA teacher: must stay in eval mode
        self.modes_seen_in_training = []

    def dense_tokens(self, images):
        return self.encoder(images).flatten(2).transpose(1, 2)

    def training_step(self, batch, batch_idx):
        self.modes_seen_in_training.append(self.encoder.training)
        (images,) = batch
        return nn.functional.mse_loss(self.decoder(self.encoder(images)), images)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(num_batches=4, batch_size=4):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(num_batches * batch_size, 3, 16, 16, generator=generator)
    return DataLoader(TensorDataset(images), batch_size=batch_size)


def probe():
    return torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def trainer(callbacks, max_epochs, **kwargs):
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def scripted(values):
    """A scorer returning the given DSE values in order (components derived from them)."""
    remaining = list(values)

    def score(tokens):
        value = remaining.pop(0)
        return SimpleNamespace(score=value, inter=value + 1, intra_image=0.5, intra_batch=0.25, dim=0.1)

    return score


def test_monitor_scores_logs_and_writes_history_and_checkpoints(tmp_path):
    model = PatchModel()
    monitor = DSEMonitor(probe(), run_dir=tmp_path, every_n_epochs=2, seed=0, config={"name": "patch"}, plot=True)
    fit = trainer([monitor], max_epochs=4)
    fit.fit(model, loader())

    history = read_run(tmp_path).to_dict()
    assert history["config"] == {"name": "patch"}
    assert history["stopped_early"] is False and history["stop_reason"] is None
    rows = history["evaluations"]
    assert [(r["index"], r["epoch"], r["global_step"]) for r in rows] == [(0, 1, 8), (1, 3, 16)]
    assert all(tuple(r) == EVALUATION_KEYS for r in rows)
    assert rows[1]["checkpoint"] == "checkpoints/epoch=0003.ckpt"

    # The logged and recorded DSE is the metric of the module's own dense tokens.
    model.eval()
    with torch.no_grad():
        expected = dse_tune.dse(model.dense_tokens(probe()), seed=0)
    assert rows[-1]["dse"] == pytest.approx(expected.score, rel=1e-5)
    assert rows[-1]["intra_batch"] == pytest.approx(expected.intra_batch, rel=1e-5)
    metrics = fit.callback_metrics
    assert float(metrics["dse"]) == pytest.approx(expected.score, rel=1e-5)
    assert {"dse/inter", "dse/intra_image", "dse/intra_batch", "dse/dim", "dse_best"} <= set(metrics)

    with open(tmp_path / "dse_history.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 2 and float(table[1]["dse"]) == pytest.approx(rows[1]["dse"])

    checkpoint = torch.load(tmp_path / rows[0]["checkpoint"], weights_only=False)
    assert checkpoint["dse"]["dse"] == rows[0]["dse"] and checkpoint["global_step"] == 8
    assert (tmp_path / "dse_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Atomic writes leave no temporary files behind.
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_scoring_runs_in_eval_mode_without_grad_and_restores_modes():
    seen = []

    def tokens_fn(module, images):
        seen.append((module.training, module.encoder.training, torch.is_grad_enabled()))
        return module.dense_tokens(images)

    model = PatchModel()
    monitor = DSEMonitor(probe(), tokens_fn=tokens_fn, every_n_epochs=1)
    trainer([monitor], max_epochs=2).fit(model, loader())
    assert seen == [(False, False, False)] * 2
    assert all(model.modes_seen_in_training), "training resumed in train mode after each evaluation"
    assert model.encoder.training and not model.frozen.training


def test_evaluating_by_steps_names_checkpoints_by_step_and_reaches_the_logger(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    monitor = DSEMonitor(probe(), run_dir=tmp_path, every_n_steps=3, scorer=scripted([1.0, 2.0]))
    csv_logger = CSVLogger(tmp_path, name="logs", version=0)
    pl.Trainer(max_epochs=2, accelerator="cpu", callbacks=[monitor], logger=csv_logger, log_every_n_steps=50,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(PatchModel(), loader())
    rows = monitor.evaluations  # 8 steps
    assert [(r["epoch"], r["global_step"]) for r in rows] == [(0, 3), (1, 6)]
    assert rows[1]["checkpoint"] == "checkpoints/epoch=0001-step=0000006.ckpt"
    assert (tmp_path / rows[1]["checkpoint"]).is_file()
    with open(tmp_path / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        logged = [(int(r["step"]), float(r["dse"])) for r in csv.DictReader(handle) if r.get("dse")]
    assert logged == [(3, 1.0), (6, 2.0)]


def test_lightning_model_checkpoint_can_monitor_dse(tmp_path):
    monitor = DSEMonitor(probe(), scorer=scripted([0.1, 0.5, 0.3]))
    best = ModelCheckpoint(dirpath=tmp_path, monitor="dse", mode="max", save_top_k=1, save_on_train_epoch_end=True)
    trainer([monitor, best], max_epochs=3).fit(PatchModel(), loader())
    assert float(best.best_model_score) == 0.5
    assert "epoch=1" in Path(best.best_model_path).name


@pytest.mark.parametrize("every_n_epochs", [1, 2])
def test_early_stopping_follows_the_degradation_rule_in_evaluations(tmp_path, every_n_epochs):
    values = [0.2, 0.5, 0.9, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2]
    rule = DegradationRule(warmup=3, patience=2, min_drop=0.1)
    stop_index = first_stop_index(values, rule)
    assert stop_index == 5
    monitor = DSEMonitor(
        probe(), run_dir=tmp_path, every_n_epochs=every_n_epochs, scorer=scripted(values), early_stopping=rule
    )
    fit = trainer([monitor], max_epochs=len(values) * every_n_epochs)
    fit.fit(PatchModel(), loader())
    # Patience counts evaluations: with one evaluation every 2 epochs it stops twice as late.
    assert len(monitor.evaluations) == stop_index + 1
    assert monitor.evaluations[-1]["epoch"] == (stop_index + 1) * every_n_epochs - 1
    assert fit.current_epoch == (stop_index + 1) * every_n_epochs
    history = read_run(tmp_path).to_dict()
    assert history["stopped_early"] is True and history["stop_reason"].startswith("degraded")


def test_early_stopping_waits_for_the_warm_up(tmp_path):
    falling = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    rule = DegradationRule(warmup=5, patience=2, min_drop=0.1)
    monitor = DSEMonitor(probe(), scorer=scripted(falling), early_stopping=rule)
    trainer([monitor], max_epochs=len(falling)).fit(PatchModel(), loader())
    # Degraded from the second evaluation on, yet no stop before 5 evaluations.
    assert len(monitor.evaluations) == 5 == first_stop_index(falling, rule) + 1
    assert monitor.history["stopped_early"]


@pytest.mark.parametrize("broken, message", [(float("nan"), "NaN or infinite"), (0.5, "collapsed")])
def test_diverged_or_collapsed_features_are_recorded_as_nan_and_stop_the_run(broken, message):
    def tokens_fn(module, images):
        if module.current_epoch >= 1:
            return torch.full((images.shape[0], 4, 8), broken)
        return module.dense_tokens(images)

    monitor = DSEMonitor(probe(), tokens_fn=tokens_fn, early_stopping=DegradationRule(warmup=5))
    with pytest.warns(UserWarning, match=f"DSE at epoch 1, step 8 is NaN: .*{message}"):
        trainer([monitor], max_epochs=5).fit(PatchModel(), loader())
    assert len(monitor.evaluations) == 2 and math.isnan(monitor.evaluations[1]["dse"])
    assert monitor.history["stop_reason"].startswith("non-finite DSE")
    assert monitor.best["index"] == 0


def test_arguments_are_checked():
    with pytest.raises(ValueError, match=r"probe_images must be a \(P, 3, H, W\) tensor"):
        DSEMonitor(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="every_n_epochs"):
        DSEMonitor(probe(), every_n_epochs=0)
    with pytest.raises(ValueError, match="needs run_dir"):
        DSEMonitor(probe(), save_last=True)
    with pytest.raises(TypeError, match="decide"):
        DSEMonitor(probe(), early_stopping=object())


def test_example_script_runs(tmp_path):
    namespace = runpy.run_path(str(REPO / "examples" / "lightning_callback.py"), run_name="example")
    history = namespace["main"](out_dir=tmp_path, max_epochs=2, num_images=32, progress_bar=False)
    assert len(history["evaluations"]) == 2
    assert json.loads((tmp_path / "dse_history.json").read_text())["evaluations"] == history["evaluations"]


def test_a_first_nan_evaluation_leaves_a_finite_peak_everywhere(tmp_path):
    rule = DegradationRule(warmup=5, nan_policy="ignore")
    monitor = DSEMonitor(probe(), run_dir=tmp_path, scorer=scripted([math.nan, 0.4, 0.7, 0.5]), early_stopping=rule)
    with pytest.warns(UserWarning, match="is NaN"):
        fit = trainer([monitor], max_epochs=4)
        fit.fit(PatchModel(), loader())
    assert monitor.best["index"] == 2 and monitor.best["dse"] == 0.7
    assert float(fit.callback_metrics["dse_best"]) == pytest.approx(0.7)
    assert read_run(tmp_path).best.index == 2


def test_listeners_are_called_after_each_evaluation_and_can_stop_training(tmp_path):
    from dse_tune.degradation import DegradationDecision

    heard = []

    def listener(evaluation, decision):
        heard.append((evaluation.index, (tmp_path / evaluation.checkpoint).is_file()))
        if evaluation.index == 1:
            return DegradationDecision(True, "stopped by a listener", None, None, 2)
        return None

    monitor = DSEMonitor(probe(), run_dir=tmp_path, scorer=scripted([0.1, 0.2, 0.3, 0.4]))
    monitor.add_listener(listener)
    trainer([monitor], max_epochs=4).fit(PatchModel(), loader())
    assert heard == [(0, True), (1, True)]
    assert read_run(tmp_path).stop_reason == "stopped by a listener"
