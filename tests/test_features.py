from __future__ import annotations

import pytest
import timm
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from dse_tune.features import dense_tokens, dense_tokens_batched, model_kind

torch.manual_seed(0)
pytestmark = pytest.mark.usefixtures("one_torch_thread")




def tiny_vit(**kwargs) -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=0, **kwargs).eval()


def test_vit_drops_class_and_register_tokens_and_keeps_the_final_norm():
    vit = tiny_vit(reg_tokens=2)
    images = torch.randn(3, 3, 32, 32)
    tokens = dense_tokens(vit, images)
    assert model_kind(vit) == "vit" and vit.num_prefix_tokens == 3
    assert tokens.shape == (3, 16, 32)
    with torch.no_grad():
        assert torch.equal(tokens, vit.forward_features(images)[:, 3:])
        # forward_features ends with the final norm: the tokens are LayerNorm outputs.
        before_norm = vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(images))))[:, 3:]
    assert torch.allclose(tokens, vit.norm(before_norm), atol=1e-6)


def test_vit_without_prefix_tokens_keeps_every_token():
    vit = tiny_vit(class_token=False, global_pool="avg")
    assert dense_tokens(vit, torch.randn(2, 3, 32, 32), kind="vit").shape == (2, 16, 32)


def test_convnet_last_stage_becomes_tokens_in_raster_order():
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0).eval()
    images = torch.randn(2, 3, 64, 64)
    tokens = dense_tokens(net, images)
    with torch.no_grad():
        feature_map = net.forward_features(images)
    assert model_kind(net) == "convnet"
    channels, height, width = feature_map.shape[1:]
    assert tokens.shape == (2, height * width, channels)
    # token n is the feature vector at row n // W, column n % W
    assert torch.equal(tokens[1, width + 1], feature_map[1, :, 1, 1])


def test_channels_last_timm_model_is_read_as_nhwc():
    swin = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), num_classes=0).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = dense_tokens(swin, images, kind="convnet")
    with torch.no_grad():
        feature_map = swin.forward_features(images)  # (B, H, W, C)
    assert tokens.shape == (2, 16, 32)
    assert torch.equal(tokens[0, 5], feature_map[0, 1, 1])


def test_callables_and_dense_tokens_methods():
    images = torch.randn(2, 3, 8, 8)
    assert dense_tokens(lambda x: x.flatten(2).transpose(1, 2), images).shape == (2, 64, 3)

    class Wrapper(nn.Module):
        def forward(self, x):  # would give a wrong shape if it were used
            return x

        def dense_tokens(self, x):
            return torch.ones(x.shape[0], 5, 7)

    assert model_kind(Wrapper()) == "callable"
    assert dense_tokens(Wrapper(), images).shape == (2, 5, 7)


def test_errors_name_the_problem():
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="kind must be one of"):
        dense_tokens(tiny_vit(), images, kind="transformer")
    with pytest.raises(ValueError, match=r"images must be a \(B, C, H, W\) tensor, got \(3, 32, 32\)"):
        dense_tokens(tiny_vit(), images[0])
    with pytest.raises(ValueError, match=r"returned \(2, 3, 32, 32\); expected a \(B, N, d\) tensor"):
        dense_tokens(lambda x: x, images)
    with pytest.raises(TypeError, match="needs a timm ViT"):
        dense_tokens(nn.Conv2d(3, 4, 3), images, kind="vit")
    with pytest.raises(TypeError, match="neither a module nor a callable"):
        model_kind(42)


def test_batched_extraction_matches_one_pass_and_needs_no_grad():
    vit = tiny_vit()
    images = torch.randn(5, 3, 32, 32)
    batched = dense_tokens_batched(vit, images, batch_size=2)
    assert not batched.requires_grad
    with torch.no_grad():
        assert torch.allclose(batched, dense_tokens(vit, images), atol=1e-6)


def _tiny_vit(**kwargs):
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=0, **kwargs).eval()


def test_a_vit_scores_other_sizes_with_timms_resampled_position_embedding():
    vit = _tiny_vit()
    pos_embed = vit.pos_embed
    images = torch.randn(2, 3, 48, 64)
    tokens = dense_tokens(vit, images)
    assert tokens.shape == (2, 6 * 8, 16)
    # The model is as it was: strict size again, the same parameter object (an optimizer keeps it).
    assert vit.pos_embed is pos_embed and not vit.dynamic_img_size
    with pytest.raises(AssertionError):
        vit.forward_features(images)
    # What timm's dynamic mode computes: the same patches plus the resampled position embedding.
    reference = _tiny_vit(dynamic_img_size=True)
    reference.load_state_dict(vit.state_dict())
    assert torch.allclose(tokens, reference.forward_features(images)[:, 1:], atol=1e-6)
    # Its own size still runs in the strict mode, with the same result as before.
    same = torch.randn(1, 3, 32, 32)
    assert torch.equal(dense_tokens(vit, same), vit.forward_features(same)[:, 1:])


def test_sides_that_are_not_patch_multiples_are_centre_cropped():
    vit = _tiny_vit(dynamic_img_size=True)
    images = torch.randn(1, 3, 44, 61)  # 44 -> 40 (crop 2 at the top), 61 -> 56 (crop 2 at the left)
    assert torch.equal(dense_tokens(vit, images), dense_tokens(vit, images[..., 2:42, 2:58]))
    with pytest.raises(ValueError, match="smaller than one 8x8 patch"):
        dense_tokens(vit, torch.randn(1, 3, 5, 40))
