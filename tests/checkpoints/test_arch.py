"""Building architectures from names: timm with kwargs, torchvision ResNets, user builders."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from dse_tune.checkpoints import ArchitectureError, TorchvisionResNet, build_architecture
from dse_tune.features import dense_tokens


def tiny_builder(width: int = 8) -> nn.Module:
    """A user's builder, importable as tests.checkpoints.test_arch:tiny_builder."""
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU())


def not_a_module() -> str:
    return "oops"


def test_timm_name_with_kwargs_has_no_head_and_no_download():
    model = build_architecture("vit_tiny_patch16_224", {"img_size": 64, "patch_size": 8, "embed_dim": 48, "depth": 3, "num_heads": 3})
    assert isinstance(model, timm.models.VisionTransformer) and not model.training
    assert (len(model.blocks), model.embed_dim, model.num_classes) == (3, 48, 0)
    assert not any(key.startswith("head.") for key in model.state_dict())


def test_kwargs_may_be_a_json_string():
    model = build_architecture("vit_tiny_patch16_224", '{"img_size": 32, "patch_size": 8, "depth": 1}')
    assert model.patch_embed.patch_size == (8, 8) and len(model.blocks) == 1


@pytest.mark.parametrize(
    "arch, kwargs, message",
    [
        ("vit_tiny_patch16_22", None, r"unknown architecture 'vit_tiny_patch16_22'.*close matches: vit_tiny_patch16_224"),
        ("resnet5O", None, r"close matches: .*resnet50"),
        ("timm:resnet5000", None, r"unknown timm model 'resnet5000'"),
        ("torchvision:vit_b_16", None, r"only ResNet-family torchvision models"),
        ("vit_tiny_patch16_224", {"no_such_kwarg": 1}, r"does not accept arch kwargs \['no_such_kwarg'\]"),
        ("vit_tiny_patch16_224", '{"img_size": 32,', r"arch kwargs .* are not valid JSON"),
        ("vit_tiny_patch16_224", "[1, 2]", r"must be a JSON object"),
        ("vit_tiny_patch16_224", {"pretrained": True}, r"pretrained=True; the weights come from the checkpoint"),
        ("no_such_module_xyz:build", None, r"cannot import module 'no_such_module_xyz'"),
        ("tests.checkpoints.test_arch:tiny_bulder", None, r"has no function 'tiny_bulder'; close matches: tiny_builder"),
        ("tests.checkpoints.test_arch:not_a_module", None, r"returned a str, not a torch.nn.Module"),
        ("tests.checkpoints.test_arch:tiny_builder", {"depth": 2}, r"tiny_builder\(\*\*\{'depth': 2\}\) failed: TypeError"),
    ],
)
def test_bad_architectures_raise_named_errors(arch, kwargs, message):
    with pytest.raises(ArchitectureError, match=message):
        build_architecture(arch, kwargs)


def test_architecture_error_is_a_value_error():
    assert issubclass(ArchitectureError, ValueError)


def test_module_function_builder_gets_the_kwargs():
    model = build_architecture("tests.checkpoints.test_arch:tiny_builder", {"width": 5})
    assert model[0].out_channels == 5


def test_builder_from_a_file(tmp_path):
    builder = tmp_path / "my_models.py"
    builder.write_text("from torch import nn\n\ndef small(width=4):\n    return nn.Linear(2, width)\n")
    assert build_architecture(f"{builder}:small", {"width": 3}).out_features == 3
    with pytest.raises(ArchitectureError, match="builder file .* does not exist"):
        build_architecture(f"{tmp_path / 'missing.py'}:small")


def test_torchvision_resnet_keeps_torchvision_names_without_fc():
    model = build_architecture("torchvision:resnet18")
    reference = torchvision.models.resnet18().state_dict()
    assert isinstance(model, TorchvisionResNet)
    assert set(model.state_dict()) == {key for key in reference if not key.startswith("fc.")}


def test_torchvision_and_timm_resnets_give_the_same_tokens_from_the_same_weights(one_torch_thread):
    torch.manual_seed(0)
    torchvision_model = build_architecture("torchvision:resnet18")
    weights = {k: torch.rand_like(v) if v.is_floating_point() else v for k, v in torchvision_model.state_dict().items()}
    torchvision_model.load_state_dict(weights)
    timm_model = build_architecture("resnet18")  # a timm name: timm first
    timm_model.load_state_dict(weights)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens = dense_tokens(torchvision_model, images)
        assert tokens.shape == (2, 4, 512)
        torch.testing.assert_close(tokens, dense_tokens(timm_model, images))
        assert torchvision_model(images).shape == (2, 512)
