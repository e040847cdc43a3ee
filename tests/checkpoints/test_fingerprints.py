"""Same-shape traps: what a checkpoint says about its network decides, or a warning says it cannot."""

from __future__ import annotations

import types

import pytest
import torch

from dse_tune.checkpoints import FingerprintMismatchError, build_architecture, load_backbone
from dse_tune.checkpoints.fingerprints import ArchFacts, read_fingerprint
from dse_tune.features import dense_tokens

SMALL = {"img_size": 32}  # official widths and depths, tiny images


def _mocov3(state, **top):
    return {"epoch": 3, "state_dict": {f"module.momentum_encoder.{k}": v for k, v in state.items()}, **top}


@pytest.fixture(scope="module")
def mocov3_vit_small():
    torch.manual_seed(0)
    return build_architecture("mocov3_vits16", SMALL)  # 12 heads, as facebookresearch/moco-v3 vits.py:115


def test_mocov3_file_with_a_6_head_vit_is_an_error_naming_the_preset(mocov3_vit_small):
    checkpoint = _mocov3(mocov3_vit_small.state_dict(), arch="vit_small")
    model = build_architecture("vit_small_patch16_224", SMALL)  # same shapes, 6 heads
    before = model.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(FingerprintMismatchError, match=r"arch='vit_small'.*heads 12 \(model: 6\).*--arch mocov3_vits16"):
        load_backbone(model, checkpoint)
    assert torch.equal(model.blocks[0].attn.qkv.weight, before)  # nothing loaded
    exact = build_architecture("mocov3_vits16", SMALL)
    load_backbone(exact, checkpoint)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(dense_tokens(exact.eval(), images), dense_tokens(mocov3_vit_small.eval(), images))


def test_mocov3_file_without_arch_and_a_timm_vit_gives_one_warning(mocov3_vit_small):
    report = load_backbone(build_architecture("vit_small_patch16_224", SMALL), _mocov3(mocov3_vit_small.state_dict()))
    assert len(report.warnings) == 1 and "12 heads" in report.warnings[0] and "mocov3_vits16" in report.warnings[0]


def test_dino_args_arch_and_patch_size_are_checked():
    torch.manual_seed(0)
    vit = build_architecture("dino_vits16", SMALL)
    args = types.SimpleNamespace(arch="vit_small", patch_size=8)  # as DINO pickles it (read back as a namespace)
    checkpoint = {"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}, "args": args,
                  "dino_loss": {}}
    with pytest.raises(FingerprintMismatchError, match=r"patch 8 \(model: 16\).*--arch dino_vits8"):
        load_backbone(build_architecture("dino_vits16", SMALL), checkpoint)
    args.patch_size = 16
    assert load_backbone(build_architecture("dino_vits16", SMALL), checkpoint).share == 1.0


def test_fingerprints_of_mae_lightning_and_ijepa(tmp_path):
    assert read_fingerprint({"args": {"model": "mae_vit_huge_patch14"}}).facts == ArchFacts(1280, 32, 16, 14)
    assert read_fingerprint({"args": {"model": "mae_vit_huge_patch14"}}).preset == "mae_vith14"
    hyper = {"hyper_parameters": {"config": {"backbone": "vit", "embed_dim": 64, "depth": 2, "num_heads": 2,
                                             "patch_size": 8}}}
    assert read_fingerprint(hyper).facts == ArchFacts(64, 2, 2, 8)
    (tmp_path / "params-ijepa.yaml").write_text("meta:\n  model_name: vit_huge\nmask:\n  patch_size: 14\n")
    found = read_fingerprint({"target_encoder": {}, "encoder": {}}, tmp_path / "jepa-ep10.pth.tar")
    assert found.facts == ArchFacts(1280, 32, 16, 14) and found.preset == "ijepa_vith14"
