"""One network per file: the DSE paper's branch by default, or a refusal naming the choices."""

from __future__ import annotations

import pytest
import torch

from dse_tune.checkpoints import AmbiguousCheckpointError, CheckpointMismatchError, build_architecture, load_backbone
from dse_tune.checkpoints.branches import DSE_TUNE_SCORED
from dse_tune.features import dense_tokens

TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
IJEPA = {**TINY, "class_token": False, "global_pool": "avg", "fc_norm": False}  # what the ijepa_* presets add


def _weights(seed, kwargs=TINY):
    torch.manual_seed(seed)
    return build_architecture("vit_tiny_patch16_224", kwargs).state_dict()


def _prefixed(prefix, state):
    return {prefix + k: v for k, v in state.items()}


def _tokens_equal(model, state, kwargs=TINY):
    reference = build_architecture("vit_tiny_patch16_224", kwargs)
    reference.load_state_dict(state)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(dense_tokens(model.eval(), images), dense_tokens(reference.eval(), images))


def test_resa_like_double_branch_reads_the_papers_encoder_and_names_the_other():
    encoder, momentum = _weights(0), _weights(1)
    checkpoint = {"epoch": 9, "state_dict": {**_prefixed("module.encoder.", encoder),
                                             **_prefixed("module.momentum_encoder.", momentum)}}
    model = build_architecture("vit_tiny_patch16_224", TINY)
    report = load_backbone(model, checkpoint)
    assert report.spec == "resa:encoder" and _tokens_equal(model, encoder)
    assert "--format mocov3:momentum_encoder" in report.summary()


def test_ijepa_reads_the_encoder_like_the_paper_and_names_the_target_encoder():
    encoder, target = _weights(0, IJEPA), _weights(1, IJEPA)
    checkpoint = {"encoder": _prefixed("module.", encoder), "target_encoder": _prefixed("module.", target),
                  "predictor": {"module.mask_token": torch.zeros(1, 1, 8)}, "epoch": 10}
    model = build_architecture("vit_tiny_patch16_224", IJEPA)
    report = load_backbone(model, checkpoint)
    assert report.spec == "ijepa:encoder" and _tokens_equal(model, encoder, IJEPA)
    assert "--format ijepa:target_encoder" in report.summary()


def test_ijepa_with_timms_avg_pool_norm_is_an_error_even_with_allow_missing():
    state = _weights(0, IJEPA)
    checkpoint = {"encoder": _prefixed("module.", state), "target_encoder": _prefixed("module.", state)}
    documented_before = {**TINY, "class_token": False, "global_pool": "avg"}  # timm moves the norm to fc_norm
    for allow in ((), ("fc_norm.*",)):
        with pytest.raises(CheckpointMismatchError, match=r"norm\.\* \(2\).*ijepa_\* preset"):
            load_backbone(build_architecture("vit_tiny_patch16_224", documented_before), checkpoint, allow_missing=allow)


@pytest.mark.parametrize("student, teacher", [("student_backbone.", "teacher_backbone."),  # lightly's examples
                                              ("backbone.", "momentum_backbone.")])  # solo-learn
def test_lightning_file_with_two_networks_stops_and_names_the_prefixes(student, teacher):
    checkpoint = {"state_dict": {**_prefixed(student, _weights(0)), **_prefixed(teacher, _weights(1))},
                  "pytorch-lightning_version": "2.5.0", "epoch": 1}
    model = build_architecture("vit_tiny_patch16_224", TINY)
    with pytest.raises(AmbiguousCheckpointError) as caught:
        load_backbone(model, checkpoint)
    assert f"--prefix {student}" in str(caught.value) and f"--prefix {teacher}" in str(caught.value)
    assert _tokens_equal(model, _weights(0)) is False  # nothing was loaded
    report = load_backbone(model, checkpoint, prefix=teacher)
    assert _tokens_equal(model, _weights(1)) and report.prefix == teacher


def test_two_networks_with_the_same_weights_go_on():
    same = _weights(0)
    checkpoint = {"state_dict": {**_prefixed("student_backbone.", same), **_prefixed("teacher_backbone.", same)}}
    assert load_backbone(build_architecture("vit_tiny_patch16_224", TINY), checkpoint).share == 1.0


def test_extra_blocks_are_a_mismatch_with_the_depth_that_fits():
    deep = build_architecture("vit_tiny_patch16_224", {**TINY, "depth": 4}).state_dict()
    with pytest.raises(CheckpointMismatchError) as caught:
        load_backbone(build_architecture("vit_tiny_patch16_224", TINY), {"model": deep})
    message = str(caught.value)
    assert "24 in the checkpoint's backbone with no place in the model: blocks.* (24)" in message
    assert '"depth": 4' in message and caught.value.extra[0].startswith("blocks.2.")
    report = load_backbone(build_architecture("vit_tiny_patch16_224", TINY), {"model": deep},
                           allow_extra=["re:blocks\\.[23]\\..*"])
    assert report.share == 1.0


def test_heads_are_ignored_and_counted_by_group():
    state = _weights(0)
    checkpoint = {"model": {**state, "head.weight": torch.zeros(3, 32), "head.bias": torch.zeros(3),
                            "decoder_blocks.0.w": torch.zeros(2)}}
    summary = load_backbone(build_architecture("vit_tiny_patch16_224", TINY), checkpoint).summary()
    assert "ignored: head.* (2), decoder_blocks.* (1)" in summary


def test_dse_tune_scored_attributes_are_the_ssl_methods_scored_backbones():
    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.methods import build_module

    for method, prefix in DSE_TUNE_SCORED.items():
        module = build_module(PretrainConfig(method=method, embed_dim=32, depth=1, num_heads=2))
        assert module.scored_backbone is getattr(module, prefix.rstrip(".")), method
