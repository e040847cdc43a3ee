"""Real tiny pretraining runs for the evaluation tests (seconds each on a 2-core CPU).

Plain functions, so that test packages without a shared conftest (tests/evaluation,
tests/cli) build the same runs from their own fixtures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests import tiny_configs

#: The runs of a rescoring sweep: 32 synthetic scenes, 8 of them the monitoring probe set.
SWEEP_CONFIG = {**tiny_configs.TINY_DINO, "epochs": 3, "synthetic_size": 32, "probe_size": 8}
SWEEP_BETAS = (0.0, 0.1)
#: Held-out images per rescoring: of the 32 scenes, 8 are the monitoring probe set.
HELD_OUT = 16
#: A run with 3 evaluations (one per epoch) and their checkpoints, for validation.
VALIDATION_RUN_CONFIG = {
    **tiny_configs.TINY_DINO,
    "batch_size": 16,
    "epochs": 3,
    "synthetic_size": 64,
    "eval_every_n_epochs": 1,
}


def pretrain_sweep(root: Path) -> Path:
    """Two runs (beta 0 and 0.1), 3 epochs each, below ``root``."""
    from dse_tune.ssl.pretrain import pretrain

    for beta in SWEEP_BETAS:
        pretrain(
            {**SWEEP_CONFIG, "dse_beta": beta},
            root / f"beta={beta}",
            logger=False,
            enable_progress_bar=False,
            accelerator="cpu",
        )
    return root


def pretrain_validation_run(root: Path) -> Path:
    """A real 3-epoch DINO run with 3 evaluations and their checkpoints: ``root/dino``."""
    from dse_tune.ssl.pretrain import pretrain

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = root / "dino"
        pretrain(VALIDATION_RUN_CONFIG, run_dir, enable_progress_bar=False, accelerator="cpu", logger=False)
    finally:
        torch.set_num_threads(previous)
    return run_dir


def write_labelled_folder(root: Path) -> None:
    """SPLIT/images + SPLIT/masks from synthetic scenes, with an ignored (255) border."""
    from dse_tune.data import SyntheticScenes

    scenes = SyntheticScenes(num_images=24, image_size=40, seed=3)
    for split, indices in (("train", range(0, 16)), ("val", range(16, 24))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in indices:
            image, mask = scenes.render(index)
            mask = mask.copy()
            mask[:4] = 255
            Image.fromarray(image).save(root / split / "images" / f"{index:03d}.png")
            Image.fromarray(mask.astype(np.uint8), mode="L").save(root / split / "masks" / f"{index:03d}.png")
