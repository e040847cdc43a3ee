"""Each shipped search space (search_spaces/*.yaml) trains: one step of its real settings.

The shipped spaces are sized for GPUs (ViT-S/16 at 224 px, a 65536-dim DINO head, ...).
Here each runs one training step and one DSE evaluation through the same code path as a
sweep trial (load_search_space -> base_config() + one sample of each dimension ->
pretrain), with only the SIZES shrunk so it fits a CPU test; every method setting (loss
temperatures, momenta, crops, mask ratios, DSE regularizer, schedules) stays the YAML's.
The named timm backbone itself is built separately, at its real size, without training.
"""

from __future__ import annotations

import math

import pytest
import torch

from dse_tune.search_space import load_search_space, shipped_search_spaces
from dse_tune.ssl.config import PretrainConfig
from dse_tune.ssl.module import create_backbone
from dse_tune.ssl.pretrain import pretrain

#: Fields that set how big the model, the data and the run are (overridden), or on which
#: hardware it runs (a CPU test runs it on one CPU). Everything else stays the YAML's.
TINY_SIZES = {
    "backbone": "vit",  # timm's VisionTransformer at the sizes below (the named one: below)
    "image_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "head_output_dim": 64,
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "global_crop_size": 32,
    "local_crop_size": 16,
    "batch_size": 4,
    "data": "synthetic",
    "splits": None,
    "synthetic_size": 8,
    "num_workers": 0,
    "epochs": 1,
    "eval_every_n_epochs": 1,
    "probe_size": 16,
}
HARDWARE = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true"}
SIZE_FIELDS = set(TINY_SIZES) | set(HARDWARE)

SHIPPED = sorted(shipped_search_spaces().items())


def trial_config(spec) -> dict:
    """What a trial of ``spec`` gets: its fixed fields plus one value of each dimension
    (the last corner: the largest beta, so the DSE regularizer runs where it is searched)."""
    config = spec.base_config()
    config.update({name: dim.corner_values()[-1] for name, dim in spec.dimensions.items()})
    return config


def tiny(config: dict) -> dict:
    """``config`` at :data:`TINY_SIZES` on one CPU (hardware fields only where the config has them)."""
    known = PretrainConfig.__dataclass_fields__
    sizes = {**TINY_SIZES, **HARDWARE}
    return {**config, **{key: value for key, value in sizes.items() if key in known}}


def test_the_four_real_scale_spaces_ship():
    assert {"dino", "ibot", "mae", "mocov3"} <= {name for name, _ in SHIPPED}


@pytest.mark.parametrize("name, path", SHIPPED, ids=[name for name, _ in SHIPPED])
def test_shipped_space_trains_one_step(name, path, tmp_path):
    spec = load_search_space(path)
    config = trial_config(spec)
    small = tiny(config)
    # Only sizes and hardware change: the method's settings reach pretrain as shipped.
    changed = {key for key in small if small[key] != config.get(key)}
    assert changed <= SIZE_FIELDS, changed - SIZE_FIELDS
    evaluations = []

    result = pretrain(
        small,
        tmp_path / name,
        logger=False,
        enable_progress_bar=False,
        accelerator="cpu",
        listeners=[lambda evaluation, decision: evaluations.append(evaluation)],
        trainer_kwargs={"limit_train_batches": 1, "num_sanity_val_steps": 0},
    )

    assert result.config.method == config["method"]
    for key, value in config.items():  # the YAML's method settings, unchanged
        if key not in SIZE_FIELDS:
            shipped = getattr(result.config, key)
            assert (list(shipped) if isinstance(shipped, tuple) else shipped) == value, key
    assert result.epochs_completed == 1
    assert [e.global_step for e in evaluations] == [1]  # one optimizer step, one evaluation
    assert math.isfinite(evaluations[0].dse), evaluations[0].failure
    assert result.chosen_checkpoint is not None and result.chosen_checkpoint.is_file()
    assert all(torch.isfinite(p).all() for p in result.module.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name, path", SHIPPED, ids=[name for name, _ in SHIPPED])
def test_shipped_backbone_is_a_timm_vit_of_the_stated_patch_size(name, path):
    fixed = load_search_space(path).base_config()
    if fixed.get("backbone", "vit") == "vit":
        pytest.skip(f"{name} builds its ViT from its own sizes (backbone: vit)")
    config = PretrainConfig(**fixed)
    model, kind = create_backbone(config)  # at its real size, untrained: no download
    assert kind == "vit"
    assert model.patch_embed.patch_size == (config.patch_size, config.patch_size)
    assert model.patch_embed.img_size == (config.image_size, config.image_size)
