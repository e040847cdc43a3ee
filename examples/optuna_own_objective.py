"""Your own Optuna objective, your own training loop: DSETracker + TrialReporter.

Each trial trains a tiny timm ViT with its own learning rate in a plain PyTorch loop.
A :class:`~dse_tune.tracker.DSETracker` scores the probe set every epoch and the Optuna
:class:`~dse_tune.integrations.optuna.TrialReporter` (a tracker listener) reports each
DSE to the trial and asks the :class:`DSEDegradationPruner`; a prune comes back as a stop
decision. The trial then *completes* with the run's peak DSE (``tracker.peak.value``):
a degraded run is past its best checkpoint, not a failed one, so even when every trial
is pruned the study has completed trials and a best one.

    python examples/optuna_own_objective.py --trials 3 --epochs 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader

from dse_tune.integrations.optuna import DSEDegradationPruner, TrialReporter
from dse_tune.data import SyntheticScenes, build_probe_set
from dse_tune.ssl.views import ViewsDataset
from dse_tune.tracker import DSETracker

HERE = Path(__file__).resolve().parent


def _plain_loop():
    """The plain PyTorch loop's pieces (its augmentations)."""
    import runpy

    return runpy.run_path(str(HERE / "plain_pytorch_loop.py"), run_name="plain_pytorch_loop")


def make_objective(out_dir: Path, epochs: int, num_images: int, probe_size: int):
    scenes = SyntheticScenes(num_images=num_images, image_size=64, seed=0)
    probe = build_probe_set(scenes, size=probe_size, image_size=32)
    two_views = _plain_loop()["two_views"]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
        torch.manual_seed(trial.number)
        model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        loader = DataLoader(ViewsDataset(scenes, two_views()), batch_size=16, shuffle=True, drop_last=True)
        tracker = DSETracker(probe.images, run_dir=out_dir / f"trial_{trial.number}", config={"lr": lr})
        reporter = tracker.add_listener(TrialReporter(trial))
        for epoch in range(epochs):
            for (view_a, view_b), _ in loader:
                a, b = F.normalize(model(view_a), dim=-1), F.normalize(model(view_b), dim=-1)
                loss = F.cross_entropy(a @ b.T / 0.2, torch.arange(len(a)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            decision = tracker.step(model, step=epoch, checkpoint=f"checkpoints/epoch={epoch:04d}.pt",
                                    save=lambda path: torch.save(model.state_dict(), path))
            if decision.stop:  # pruned (or the run's own rule): stop training, keep the peak
                break
        trial.set_user_attr("stopped_by", reporter.stopped_by)
        trial.set_user_attr("peak_epoch", None if tracker.best is None else tracker.best.epoch)
        return tracker.peak.value if tracker.peak.value is not None else float("nan")

    return objective


def main(out_dir: str | Path = "runs/optuna_own", trials: int = 3, epochs: int = 6, num_images: int = 48,
         probe_size: int = 16, warmup: int = 2, patience: int = 1) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=DSEDegradationPruner(warmup=warmup, patience=patience))
    study.optimize(make_objective(Path(out_dir), epochs, num_images, probe_size), n_trials=trials)
    best = study.best_trial
    print(f"best trial {best.number}: peak DSE {best.value:.4f} at epoch {best.user_attrs['peak_epoch']} "
          f"(lr {best.params['lr']:.2e}); stopped by: {[t.user_attrs['stopped_by'] for t in study.trials]}")
    return study


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/optuna_own")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    main(args.out, args.trials, args.epochs)
