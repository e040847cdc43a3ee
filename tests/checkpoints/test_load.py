"""Strict loading: all backbone weights or a named error, never a partly random model."""

from __future__ import annotations

import pytest
import torch

from dse_tune.checkpoints import CheckpointMismatchError, CheckpointReadError, LoadReport, build_architecture, load_backbone, match_formats
from dse_tune.checkpoints.load import model_shapes

TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def tiny_vit(**overrides):
    return build_architecture("vit_tiny_patch16_224", {**TINY_VIT, **overrides})


def dino_checkpoint(state, **extra):
    return {"teacher": {f"backbone.{k}": v for k, v in state.items()}, "dino_loss": {"center": torch.zeros(1, 4)}, "epoch": 5, **extra}


@pytest.fixture
def trained():
    torch.manual_seed(0)
    return {k: torch.rand_like(v) for k, v in tiny_vit().state_dict().items()}


def test_report_describes_what_was_loaded(trained):
    report = load_backbone(tiny_vit(), dino_checkpoint(trained), source="run/checkpoint0004.pth")
    assert isinstance(report, LoadReport)
    assert (report.source, report.format, report.branch, report.container, report.prefix) == ("run/checkpoint0004.pth", "dino", "teacher", "teacher", "backbone.")
    assert report.total == len(trained) == len(report.loaded) and report.share == 1.0
    assert report.spec == "dino:teacher" and report.position.epoch == 5
    assert report.summary().startswith("dino:teacher: 30/30 weights from 'teacher' (prefix 'backbone.')")


def test_missing_weight_raises_naming_file_format_keys_and_share_and_leaves_model_untouched(trained, tmp_path):
    partial = {k: v for k, v in trained.items() if not k.startswith("blocks.1.")}
    path = tmp_path / "checkpoint0010.pth"
    torch.save(dino_checkpoint(partial), path)
    model = tiny_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with pytest.raises(CheckpointMismatchError) as caught:
        load_backbone(model, path)

    message = str(caught.value)
    assert str(path) in message and "format dino:teacher" in message
    assert "18/30 backbone weights loadable (60.0%)" in message
    assert "12 missing: blocks.1.norm1.weight (32,)" in message
    assert "left unchanged" in message
    assert caught.value.share == pytest.approx(0.6) and caught.value.missing[0] == ("blocks.1.norm1.weight", (32,))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shape_mismatch_raises_with_both_shapes(trained):
    model = tiny_vit(img_size=64)  # pos_embed (1, 65, 32) against the checkpoint's (1, 17, 32)
    with pytest.raises(CheckpointMismatchError, match=r"1 of another shape: pos_embed: checkpoint \(1, 17, 32\), model \(1, 65, 32\).*img_size 32") as caught:
        load_backbone(model, dino_checkpoint(trained))
    assert caught.value.mismatched == [("pos_embed", (1, 17, 32), (1, 65, 32))]


def test_shape_mismatch_is_not_excused_by_allow_missing(trained):
    with pytest.raises(CheckpointMismatchError, match="another shape"):
        load_backbone(tiny_vit(img_size=64), dino_checkpoint(trained), allow_missing=["pos_embed", "*"])


@pytest.mark.parametrize("patterns", ["blocks.1.*", ["re:blocks\\.1\\..*"], ("norm.*", "blocks.1.*")])
def test_allow_missing_excuses_matching_keys_fnmatch_or_regex(trained, patterns):
    partial = {k: v for k, v in trained.items() if not k.startswith("blocks.1.")}
    model = tiny_vit()
    report = load_backbone(model, dino_checkpoint(partial), allow_missing=patterns)
    assert len(report.allowed_missing) == 12 and report.share == pytest.approx(18 / 30)
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], trained["blocks.0.attn.qkv.weight"])


def test_regex_pattern_must_match_the_whole_key(trained):
    partial = {k: v for k, v in trained.items() if k != "norm.weight"}
    with pytest.raises(CheckpointMismatchError, match="norm.weight"):
        load_backbone(tiny_vit(), dino_checkpoint(partial), allow_missing=["re:norm"])


def test_invalid_regex_pattern_is_named(trained):
    with pytest.raises(ValueError, match=r"allow_missing pattern 're:\[' is not a valid regular expression"):
        load_backbone(tiny_vit(), dino_checkpoint(trained), allow_missing=["re:["])


def test_nothing_matching_says_what_the_checkpoint_holds(trained):
    checkpoint = {"net": {f"encoder.layers.{k}": v for k, v in trained.items()}, "epoch": 1}
    with pytest.raises(CheckpointMismatchError) as caught:
        load_backbone(tiny_vit(), checkpoint)
    message = str(caught.value)
    assert "format auto" in message and "0/30" in message and "no format found any of the model's weights" in message
    assert "top-level entries: net, epoch" in message and "tensors under 'net': encoder.layers.cls_token" in message
    assert "the model wants: cls_token, pos_embed" in message


def test_explicit_format_whose_container_is_absent_says_so(trained):
    with pytest.raises(CheckpointMismatchError, match="format 'mae' reads model, which the checkpoint lacks"):
        load_backbone(tiny_vit(), dino_checkpoint(trained), "mae")


def test_explicit_format_is_used_even_when_another_fits(trained):
    checkpoint = {"model": trained}  # fits mae and state_dict
    assert load_backbone(tiny_vit(), checkpoint).format == "state_dict"  # no MAE decoder: generic wins
    assert load_backbone(tiny_vit(), checkpoint, "mae").format == "mae"


def test_prefix_override_reads_a_lightning_module_attribute(trained):
    checkpoint = {"state_dict": {f"model.backbone.{k}": v for k, v in trained.items()}, "pytorch-lightning_version": "2.5"}
    report = load_backbone(tiny_vit(), checkpoint, "lightning", prefix="model.backbone.")
    assert (report.format, report.prefix, report.share) == ("lightning", "model.backbone.", 1.0)
    assert load_backbone(tiny_vit(), checkpoint).prefix == "model.backbone."  # found without help


def test_wrong_prefix_override_fails(trained):
    checkpoint = {"state_dict": {f"model.backbone.{k}": v for k, v in trained.items()}}
    with pytest.raises(CheckpointMismatchError):
        load_backbone(tiny_vit(), checkpoint, "lightning", prefix="model.head.")


def test_unknown_format_is_a_value_error(trained):
    with pytest.raises(ValueError, match="unknown checkpoint format 'dino3'"):
        load_backbone(tiny_vit(), dino_checkpoint(trained), "dino3")


def test_unreadable_file_raises_read_error(tmp_path):
    path = tmp_path / "checkpoint0001.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointReadError, match="checkpoint0001.pth"):
        load_backbone(tiny_vit(), path)


def test_match_formats_ranks_every_candidate(trained):
    matches = match_formats(model_shapes(tiny_vit()), dino_checkpoint(trained))
    assert [m.format.name for m in matches[:2]] == ["dino", "ibot"]
    assert matches[0].loadable == matches[1].loadable == 30 and matches[0].markers > matches[1].markers


def test_dtype_of_the_checkpoint_is_cast_to_the_model(trained):
    half = {k: v.half() for k, v in trained.items()}
    model = tiny_vit()
    load_backbone(model, dino_checkpoint(half))
    assert model.pos_embed.dtype == torch.float32
    assert torch.equal(model.pos_embed, half["pos_embed"].float())
