"""DSE monitoring in a plain PyTorch training loop (no Lightning): ``DSETracker``.

A tiny timm ViT learns a toy self-supervised objective (two augmented views of a scene
should agree, InfoNCE) on dse_tune's embedded synthetic scenes. After every epoch the
tracker scores the patch tokens of a fixed probe set (tolerantly: NaN, never an
exception), with its noise (the standard error over the probe images), appends the
evaluation to ``RUN_DIR/dse_history.json`` with the optimizer steps taken so far, saves
the checkpoint through ``torch.save`` and applies the degradation rule; the loop stops
when the rule says so. Then the run folder is handed to the selector, as any run would
be: the rule and the selector make one decision (the same peak, the same noise), so a
run stopped "degraded from the peak at epoch E" selects epoch E.

    python examples/plain_pytorch_loop.py --out runs/plain --epochs 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader
from torchvision import transforms

from dse_tune.degradation import DegradationRule
from dse_tune.runs import read_run
from dse_tune.selection import select_best
from dse_tune.data import IMAGENET_MEAN, IMAGENET_STD, SyntheticScenes, build_probe_set
from dse_tune.ssl.views import ViewsDataset
from dse_tune.tracker import DSETracker


def two_views(image_size: int = 32):
    augment = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(0.4, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.4, 0.4, 0.4),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return lambda image: [augment(image), augment(image)]


def main(out_dir: str | Path = "runs/plain", epochs: int = 8, num_images: int = 64, probe_size: int = 32) -> dict:
    torch.manual_seed(0)
    scenes = SyntheticScenes(num_images=num_images, image_size=64, seed=0)
    probe = build_probe_set(scenes, size=probe_size, image_size=32)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(ViewsDataset(scenes, two_views()), batch_size=16, shuffle=True, drop_last=True)
    tracker = DSETracker(probe.images, run_dir=out_dir, rule=DegradationRule(warmup=3, patience=2), plot=True)

    steps = 0  # optimizer steps so far: the run folder's global_step (0 would mean untrained)
    for epoch in range(epochs):
        model.train()
        for (view_a, view_b), _ in loader:
            a = F.normalize(model(view_a), dim=-1)
            b = F.normalize(model(view_b), dim=-1)
            loss = F.cross_entropy(a @ b.T / 0.2, torch.arange(len(a)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        # Score, record, save the checkpoint, decide: one call (the model's mode is restored).
        decision = tracker.step(
            model, step=epoch, global_step=steps, checkpoint=f"checkpoints/epoch={epoch:04d}.pt",
            save=lambda path: torch.save(model.state_dict(), path),
        )
        latest = tracker.evaluations[-1]
        noise = "" if latest.noise is None else f" +- {latest.noise:.4f}"
        print(f"epoch {epoch}: loss {loss.item():.3f}  DSE {latest.dse:.4f}{noise}  {decision.reason}")
        if decision.stop:
            break
    tracker.write_plot()

    selection = select_best([read_run(out_dir)])
    print(f"selected: epoch {selection.best_epoch}, checkpoint {selection.best_checkpoint}")
    print(f"reliability: {selection.best.reliability}")
    return {"history": tracker.run.to_dict(), "best_checkpoint": selection.best_checkpoint,
            "stopped_early": tracker.stopped, "stop_peak_index": tracker.last_decision.peak_index,
            "chosen_index": selection.best.chosen_index, "tracker_best_index": tracker.best.index}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/plain")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    main(args.out, args.epochs, args.images)
