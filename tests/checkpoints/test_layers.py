"""Dense tokens at a chosen layer: ViT blocks, ConvNet stages, the paper's default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dse_tune.checkpoints import build_architecture, dense_tokens_at, layer_name, num_layers
from dse_tune.checkpoints.layers import _vit_block_tokens
from dse_tune.features import dense_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    kwargs = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 32, "num_heads": 2, "reg_tokens": 2}
    return build_architecture("vit_tiny_patch16_224", kwargs)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _block_outputs(model, images):
    outputs = []
    handles = [block.register_forward_hook(lambda m, i, o: outputs.append(o)) for block in model.blocks]
    model.forward_features(images)
    for handle in handles:
        handle.remove()
    return [o[:, model.num_prefix_tokens :] for o in outputs]


def test_last_layer_is_the_papers_tokens(vit, images):
    assert num_layers(vit) == 3
    assert torch.equal(dense_tokens_at(vit, images), dense_tokens(vit, images))
    assert layer_name(vit, -1) == "last+norm"


def test_block_indices_give_each_blocks_output_with_the_final_norm_like_the_papers_get_embeddings(vit, images):
    expected = _block_outputs(vit, images)
    for index in range(3):
        tokens = dense_tokens_at(vit, images, index)
        assert tokens.shape == (2, 16, 32)
        # The paper's get_embeddings: norm(x) after every block; prefix tokens go after the norm.
        full = []
        handle = vit.blocks[index].register_forward_hook(lambda m, i, o: full.append(o))
        vit.forward_features(images)
        handle.remove()
        torch.testing.assert_close(tokens, vit.norm(full[0])[:, vit.num_prefix_tokens:])
        torch.testing.assert_close(dense_tokens_at(vit, images, index, norm=False), expected[index])
    torch.testing.assert_close(dense_tokens_at(vit, images, -2, norm=False), expected[1])  # counts from the end
    torch.testing.assert_close(dense_tokens_at(vit, images, 2), dense_tokens_at(vit, images, -1))  # last = -1
    assert not torch.allclose(dense_tokens_at(vit, images, 2, norm=False), dense_tokens_at(vit, images, -1))
    assert (layer_name(vit, 1), layer_name(vit, 1, norm=False)) == ("block 1+norm", "block 1")


def test_hook_fallback_matches_forward_intermediates(vit, images):
    class NoIntermediates(nn.Module):  # a ViT-like model from an older timm
        def __init__(self, inner):
            super().__init__()
            self.inner, self.blocks, self.num_prefix_tokens = inner, inner.blocks, inner.num_prefix_tokens
            self.norm = inner.norm

        def forward_features(self, x):
            return self.inner.forward_features(x)

    for norm in (True, False):
        torch.testing.assert_close(_vit_block_tokens(NoIntermediates(vit), images, 1, norm),
                                   dense_tokens_at(vit, images, 1, norm=norm))


@pytest.mark.parametrize("arch", ["resnet18", "torchvision:resnet18"])
def test_convnet_stages_follow_timm_feature_info(arch):
    model = build_architecture(arch)
    images = torch.rand(1, 3, 64, 64)
    assert num_layers(model) == 5
    shapes = [tuple(dense_tokens_at(model, images, stage).shape) for stage in range(5)]
    assert shapes == [(1, 1024, 64), (1, 256, 64), (1, 64, 128), (1, 16, 256), (1, 4, 512)]
    assert torch.equal(dense_tokens_at(model, images, 4), dense_tokens_at(model, images, -1))
    assert layer_name(model, 4) == "stage 4 (layer4)" and layer_name(model, -1) == "last"


def test_out_of_range_and_non_integer_layers(vit, images):
    with pytest.raises(ValueError, match=r"layer 3 is out of range for VisionTransformer with 3 layers: use -1 .* or -3..2"):
        dense_tokens_at(vit, images, 3)
    with pytest.raises(ValueError, match="layer -4 is out of range"):
        dense_tokens_at(vit, images, -4)
    with pytest.raises(TypeError, match="layer must be an int"):
        dense_tokens_at(vit, images, "all")


def test_callables_only_have_the_last_layer(images):
    def tokens(x):
        return x.flatten(2).transpose(1, 2)

    assert dense_tokens_at(tokens, images, -1).shape == (2, 1024, 3)
    with pytest.raises(TypeError, match="only layer=-1"):
        dense_tokens_at(tokens, images, 0)


def test_block_tokens_at_another_probe_size_match_the_last_layer_convention(vit):
    """A probe of another size (e.g. `--image-size 48x64`) reaches every block, as it reaches the last layer."""
    rectangles = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    last_block = dense_tokens_at(vit, rectangles, 2)
    assert last_block.shape == (2, 6 * 8, 32)
    torch.testing.assert_close(last_block, dense_tokens(vit, rectangles))  # block 2 + norm = the last layer
    assert dense_tokens_at(vit, rectangles, 0, norm=False).shape == (2, 48, 32)
    assert tuple(vit.patch_embed.img_size) == (32, 32) and not vit.dynamic_img_size  # restored
