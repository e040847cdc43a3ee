"""DSE monitoring in your own Lightning training loop.

Any LightningModule works: give it a ``dense_tokens(images) -> (B, N, d)`` method (or
pass ``tokens_fn=`` to the monitor). Here, a small timm ViT is trained with a toy
self-supervised objective (two augmented views should agree) on the embedded synthetic
scenes; ``DSEMonitor`` scores its patch tokens on a fixed probe set every epoch, writes
``dse_history.json``/``.csv``, a checkpoint per evaluation and a plot, and stops the
run if the dense features degrade. Lightning's own ``ModelCheckpoint`` keeps the
best-DSE weights too.

    python examples/lightning_callback.py --out runs/example --epochs 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader

from dse_tune.degradation import DegradationRule
from dse_tune.features import dense_tokens
from dse_tune.integrations.lightning import DSEMonitor
from dse_tune.data import SyntheticScenes, build_probe_set
from dse_tune.ssl.views import ViewsDataset


class ToySSL(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0)

    def dense_tokens(self, images: torch.Tensor) -> torch.Tensor:
        # What DSEMonitor scores: timm ViT patch tokens, CLS dropped, final norm applied.
        return dense_tokens(self.vit, images, kind="vit")

    def training_step(self, batch, batch_idx):
        (view_a, view_b), _ = batch
        a = F.normalize(self.vit(view_a), dim=-1)
        b = F.normalize(self.vit(view_b), dim=-1)
        logits = a @ b.T / 0.2
        loss = F.cross_entropy(logits, torch.arange(len(a), device=a.device))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def two_views(image):
    import torchvision.transforms as T

    augment = T.Compose([T.RandomResizedCrop(32, scale=(0.4, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                         T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return [augment(image), augment(image)]


def main(out_dir: str | Path = "runs/example", max_epochs: int = 5, num_images: int = 128, progress_bar: bool = True) -> dict:
    pl.seed_everything(0, verbose=False)
    scenes = SyntheticScenes(num_images=num_images, image_size=48, seed=0)
    probe = build_probe_set(scenes, size=32, image_size=32)  # fixed images for every evaluation
    loader = DataLoader(ViewsDataset(scenes, two_views), batch_size=16, shuffle=True, drop_last=True)

    monitor = DSEMonitor(
        probe.images,
        run_dir=out_dir,
        every_n_epochs=1,
        early_stopping=DegradationRule(warmup=5, patience=3, min_drop=0.1),
        plot=True,
    )
    # Lightning's own callback can select on the logged "dse" too.
    best = ModelCheckpoint(dirpath=Path(out_dir) / "best", monitor="dse", mode="max", save_on_train_epoch_end=True)
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="auto", devices=1, callbacks=[monitor, best],
                         logger=False, enable_model_summary=False, enable_progress_bar=progress_bar)
    trainer.fit(ToySSL(), loader)

    for record in monitor.evaluations:
        print(f"epoch {record['epoch']}: DSE {record['dse']:.4f}  ({record['checkpoint']})")
    print(f"best by DSE: {best.best_model_path}")
    return monitor.history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/example")
    parser.add_argument("--epochs", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.out, arguments.epochs)
