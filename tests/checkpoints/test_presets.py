"""Presets of the official models: each is the network its official repository defines."""

from __future__ import annotations

import pytest
import torch

from dse_tune.checkpoints import PRESETS, build_architecture, load_backbone
from dse_tune.checkpoints.fingerprints import ArchFacts, model_facts
from dse_tune.features import dense_tokens

# Facts read from the official model definitions (docs/tracking.md cites file and line):
# (width, depth, heads, patch), class token, MLP hidden width.
OFFICIAL = {
    "dino_vits16": ((384, 12, 6, 16), True, 1536), "dino_vits8": ((384, 12, 6, 8), True, 1536),
    "dino_vitb16": ((768, 12, 12, 16), True, 3072), "dino_vitb8": ((768, 12, 12, 8), True, 3072),
    "ibot_vits16": ((384, 12, 6, 16), True, 1536), "ibot_vitb16": ((768, 12, 12, 16), True, 3072),
    "ibot_vitl16": ((1024, 24, 16, 16), True, 4096),
    "mae_vits16": ((384, 12, 6, 16), True, 1536), "mae_vitb16": ((768, 12, 12, 16), True, 3072),
    "mae_vitl16": ((1024, 24, 16, 16), True, 4096), "mae_vith14": ((1280, 32, 16, 14), True, 5120),
    "mocov3_vits16": ((384, 12, 12, 16), True, 1536), "mocov3_vitb16": ((768, 12, 12, 16), True, 3072),
    "ijepa_vits16": ((384, 12, 6, 16), False, 1536), "ijepa_vitb16": ((768, 12, 12, 16), False, 3072),
    "ijepa_vitl16": ((1024, 24, 16, 16), False, 4096), "ijepa_vith14": ((1280, 32, 16, 14), False, 5120),
    "ijepa_vith16": ((1280, 32, 16, 16), False, 5120), "ijepa_vitg16": ((1408, 40, 16, 16), False, 6144),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_each_vit_preset_has_the_official_sizes_bias_and_norm_placement(name):
    with torch.device("meta"):  # shapes only: no memory for ViT-g
        model = build_architecture(name)
    sizes, class_token, hidden = OFFICIAL[name]
    assert model_facts(model) == ArchFacts(*sizes)
    assert (model.num_prefix_tokens == 1) == class_token
    keys = model.state_dict()
    assert "norm.weight" in keys and "fc_norm.weight" not in keys  # the final norm where the official ViTs keep it
    assert "blocks.0.attn.qkv.bias" in keys and model.blocks[0].mlp.fc1.weight.shape[0] == hidden
    assert model.norm.eps == 1e-6 and model.blocks[0].norm1.eps == 1e-6
    grid = 224 // sizes[3]
    assert model.pos_embed.shape == (1, grid * grid + class_token, sizes[0])
    assert PRESETS[name].source


def test_every_preset_is_listed_and_resnet50_is_torchvisions_layout():
    assert set(PRESETS) == set(OFFICIAL) | {"resnet50"}
    with torch.device("meta"):
        keys = build_architecture("resnet50").state_dict()
    assert "layer4.2.bn3.weight" in keys and "fc.weight" not in keys


def test_user_kwargs_add_to_a_preset():
    model = build_architecture("mocov3_vits16", {"img_size": 32, "depth": 2})
    assert model_facts(model) == ArchFacts(384, 2, 12, 16) and model.pos_embed.shape == (1, 5, 384)


def test_mocov3_preset_reproduces_the_tokens_of_a_12_head_vit():
    torch.manual_seed(0)
    kwargs = {"img_size": 32, "depth": 2}  # tiny depth: a file without 'arch', nothing to contradict it
    trained = build_architecture("vit_small_patch16_224", {**kwargs, "num_heads": 12})  # MoCo v3's vit_small
    checkpoint = {"epoch": 1, "state_dict": {f"module.momentum_encoder.{k}": v for k, v in trained.state_dict().items()}}
    model = build_architecture("mocov3_vits16", kwargs)
    report = load_backbone(model, checkpoint)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(dense_tokens(model.eval(), images), dense_tokens(trained.eval(), images))
    assert report.spec == "mocov3:momentum_encoder" and not report.warnings  # 12 heads: no trap to warn about
