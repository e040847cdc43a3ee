"""Your own training function on Ray Tune, monitored by DSE and stopped by dse_tune's stopper.

Not dse_tune's pretraining: a plain PyTorch loop (a tiny timm ViT, a toy two-view
objective on dse_tune's synthetic scenes) that you would write anyway. Three lines make
it a DSE-monitored Tune trial:

- a :class:`~dse_tune.tracker.DSETracker` scores a fixed probe set after every epoch and
  keeps the run folder (history, checkpoints) in ``SWEEP/runs/<trial_id>``;
- a :class:`~dse_tune.integrations.ray.TuneReporter` listening to it reports each DSE
  evaluation to Tune (``dse``, ``dse_best``, ``evaluation``, ``run_dir``);
- :class:`~dse_tune.integrations.ray.OptunaPrunerStopper` is the Tuner's ``stop``: it
  applies the degradation rule (or any Optuna pruner) to every trial's reports, and
  writes into a stopped trial's run folder that, and why, it was stopped.

Then the run folders are what any dse_tune run is: ``dse-tune select SWEEP`` reads them.

    python examples/ray_own_trainable.py --out runs/ray_own_trainable
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from ray import tune
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader
from torchvision import transforms

from dse_tune.data import IMAGENET_MEAN, IMAGENET_STD, SyntheticScenes, build_probe_set
from dse_tune.integrations.ray import OptunaPrunerStopper, TuneReporter, connect, run_dir_of_trial
from dse_tune.runs import find_runs, read_run
from dse_tune.ssl.views import ViewsDataset
from dse_tune.tracker import DSETracker


def train_function(config: dict) -> None:
    """A Tune function trainable: your training loop, plus the tracker and its reporter."""
    torch.manual_seed(config["seed"])
    torch.set_num_threads(1)
    scenes = SyntheticScenes(num_images=config["images"], image_size=64, seed=0)
    augment = transforms.Compose([
        transforms.RandomResizedCrop(32, scale=(0.4, 1.0)),
        transforms.ColorJitter(0.4, 0.4, 0.4),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    loader = DataLoader(ViewsDataset(scenes, lambda image: [augment(image), augment(image)]), batch_size=16,
                        shuffle=True, drop_last=True)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"])

    run_dir = run_dir_of_trial()  # SWEEP/runs/<trial_id>: where the selector looks
    tracker = DSETracker(build_probe_set(scenes, size=16, image_size=32).images, run_dir=run_dir)
    tracker.add_listener(TuneReporter(run_dir))

    for epoch in range(config["epochs"]):
        for (view_a, view_b), _ in loader:
            a = F.normalize(model(view_a), dim=-1)
            b = F.normalize(model(view_b), dim=-1)
            loss = F.cross_entropy(a @ b.T / 0.2, torch.arange(len(a)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # Score the probe set, record, save the checkpoint, tell Tune (the reporter). Tune
        # ends this function inside that report when its stopper says stop.
        tracker.step(model, step=epoch, checkpoint=f"checkpoints/epoch={epoch:04d}.pt",
                     save=lambda path: torch.save(model.state_dict(), path))


def main(out: str | Path = "runs/ray_own_trainable", epochs: int = 8, pruner=None, address: str | None = None) -> dict:
    """Run two trials (two learning rates); return each trial's run folder verdict.

    ``pruner``: the stopper's Optuna pruner (default: dse_tune's degradation rule).
    """
    out = Path(out).resolve()
    print(connect(address, num_cpus=2))
    tuner = tune.Tuner(
        train_function,
        param_space={"lr": tune.grid_search([3e-4, 3e-3]), "epochs": epochs, "images": 64, "seed": 0},
        tune_config=tune.TuneConfig(metric="dse_best", mode="max", max_concurrent_trials=2),
        run_config=tune.RunConfig(name=out.name, storage_path=str(out.parent), stop=OptunaPrunerStopper(pruner),
                                  verbose=0),
    )
    tuner.fit()
    verdicts = {}
    for run_dir in find_runs(out):
        run = read_run(run_dir)
        verdicts[run_dir.name] = {"evaluations": len(run.evaluations), "stopped_early": run.stopped_early,
                                  "stop_reason": run.stop_reason}
        stopped = f"yes ({run.stop_reason})" if run.stopped_early else "no"
        print(f"{run_dir.name}: {len(run.evaluations)} evaluations, stopped early: {stopped}")
    print(f"select a checkpoint with: dse-tune select {out}")
    return verdicts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ray_own_trainable", help="the sweep folder")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: a local one)")
    args = parser.parse_args()
    main(args.out, args.epochs, address=args.address)
