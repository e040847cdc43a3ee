from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from dse_tune.data import SyntheticScenes
from dse_tune.ssl.views import ViewsDataset
from dse_tune.ssl.methods import METHOD_MODULES, build_module
from dse_tune.ssl.module import BackboneMismatchError
from tests.ssl.conftest import tiny_config


@pytest.mark.parametrize(
    "method, scored, student",
    [
        ("dino", "teacher_backbone", "student_backbone"),
        ("ibot", "teacher_backbone", "student_backbone"),
        ("mae", "backbone", "backbone"),
        ("mocov3", "momentum_backbone", "backbone"),
    ],
)
def test_dense_tokens_come_from_the_documented_network(method, scored, student):
    module = build_module(tiny_config(method))
    assert isinstance(module, METHOD_MODULES[method])
    assert module.scored_backbone is getattr(module, scored)
    images = torch.randn(3, 3, 32, 32)
    tokens = module.dense_tokens(images)
    assert tokens.shape == (3, 16, 64) and not tokens.requires_grad  # 4x4 patches, CLS dropped
    if scored != student:
        # The EMA/momentum copy starts equal to the student and never receives gradients.
        assert all(not p.requires_grad for p in getattr(module, scored).parameters())
        with torch.no_grad():
            assert torch.equal(tokens, getattr(module, student).dense_tokens(images))


@pytest.mark.parametrize("method", ["mae", "ibot"])
def test_masked_methods_refuse_a_convnet_with_a_reason(method):
    with pytest.raises(BackboneMismatchError, match=rf"method '{method}' .* needs a ViT backbone; 'resnet10t' is a ConvNet"):
        build_module(tiny_config(method, backbone="resnet10t"))


def test_dino_trains_on_a_timm_convnet():
    config = tiny_config("dino", backbone="resnet10t", image_size=64, local_crop_size=32, num_local_crops=1)
    module = build_module(config)
    assert module.dense_tokens(torch.randn(2, 3, 64, 64)).shape == (2, 4, 512)  # 2x2 last stage
    scenes = SyntheticScenes(num_images=8, image_size=64, seed=0)
    loader = DataLoader(ViewsDataset(scenes, module.build_transform()), batch_size=4, drop_last=True)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    before = [p.detach().clone() for p in module.teacher_backbone.parameters()]
    trainer.fit(module, loader)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    # The teacher moved by EMA: away from its start, not all the way to the student.
    teacher, student = list(module.teacher_backbone.parameters()), list(module.student_backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher))
    assert any(not torch.equal(t, s) for t, s in zip(teacher, student))


def test_ibot_block_masks_patch_tokens_only():
    module = build_module(tiny_config("ibot"))
    block_mask, token_mask = module._block_mask(torch.zeros(8, 3, 32, 32))
    assert block_mask.shape == (8, 4, 4) and token_mask.shape == (8, 17)
    assert not token_mask[:, 0].any(), "the CLS token is never masked"
    assert token_mask[:, 1:].sum(dim=1).max() <= 0.5 * 16  # mask_ratio caps the masked share
    assert token_mask.any(), "some images are masked"


@pytest.mark.parametrize("method", ["dino", "ibot", "mae", "mocov3"])
def test_every_trainable_parameter_gets_a_gradient_so_ddp_finds_none_unused(method):
    # DDP (without find_unused_parameters) fails when a trainable parameter gets no
    # gradient. The cause was lightly's mask token, created by its ViT wrapper for
    # every method but used only by iBOT: it is frozen where nothing masks with it.
    module = build_module(tiny_config(method, batch_size=4))
    module.teacher_temperature = lambda: 0.04  # no Trainer attached: a fixed temperature
    scenes = SyntheticScenes(num_images=4, image_size=32, seed=0)
    views, _ = next(iter(DataLoader(ViewsDataset(scenes, module.build_transform()), batch_size=4)))
    loss, _, _ = module.ssl_step(list(views))
    loss.backward()
    unused = [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    student = module.student_backbone if method in ("dino", "ibot") else module.backbone
    assert student.encoder.mask_token.requires_grad == (method == "ibot")
