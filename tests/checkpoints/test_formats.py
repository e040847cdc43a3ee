"""Every supported official layout, written with the official key names and nesting
(DDP ``module.`` prefixes, heads, predictors, optimizer state, pickled ``args``), is found
by ``format="auto"``, loads every backbone weight, and gives exactly the dense tokens of
the same weights loaded directly."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from dse_tune.checkpoints import FORMAT_NAMES, FORMATS, build_architecture, load_backbone
from dse_tune.checkpoints.formats import extract, find_prefix, resolve_format, strip_wrappers
from dse_tune.features import dense_tokens

REPO = Path(__file__).resolve().parents[2]
TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
ARCHS = {
    "vit": ("vit_tiny_patch16_224", TINY_VIT),
    "vit_no_cls": ("vit_tiny_patch16_224", {**TINY_VIT, "class_token": False, "global_pool": "avg", "fc_norm": False}),  # I-JEPA
    "resnet": ("resnet18", {}),
}
IMAGE_SIZE = {"vit": 32, "vit_no_cls": 32, "resnet": 64}


def _weights(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """A backbone state dict with every value set (positive: BN variances stay valid)."""
    torch.manual_seed(seed)
    name, kwargs = ARCHS[arch]
    return {k: torch.rand_like(v) if v.is_floating_point() else v + 3 for k, v in build_architecture(name, kwargs).state_dict().items()}


def _prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}{key}": value for key, value in state.items()}


def _extra(*names: str) -> dict:
    return {name: torch.randn(4, 3) for name in names}


# An arch name with no official sizes: the tiny test models have no fingerprint to contradict
# (tests/checkpoints/test_fingerprints.py checks the official names).
ARGS = argparse.Namespace(arch="tiny_test_vit", lr=0.0005, out_dim=65536, output_dir=".")
OPTIMIZER = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


def dino(kept, other, resnet=False):
    teacher_prefix = "module.backbone." if resnet else "backbone."  # DINO wraps the teacher in DDP only with BN
    return {
        "student": {**_prefixed("module.backbone.", other), **_extra("module.head.mlp.0.weight", "module.head.last_layer.weight_g")},
        "teacher": {**_prefixed(teacher_prefix, kept), **_extra("head.mlp.0.weight", "head.last_layer.weight_v")},
        "optimizer": OPTIMIZER, "epoch": 21, "args": ARGS, "dino_loss": {"center": torch.zeros(1, 65)},
    }


def ibot(kept, other):
    return {
        "student": {**_prefixed("module.backbone.", other), **_extra("module.backbone.masked_embed", "module.head.mlp.0.weight")},
        "teacher": {**_prefixed("backbone.", kept), **_extra("backbone.masked_embed", "head.last_layer2.weight_g")},
        "optimizer": OPTIMIZER, "epoch": 21, "args": ARGS, "ibot_loss": {"center": torch.zeros(1, 65), "center2": torch.zeros(1, 1, 65)},
    }


def mae(kept, other):
    decoder = _extra("mask_token", "decoder_embed.weight", "decoder_pos_embed", "decoder_blocks.0.norm1.weight", "decoder_norm.weight", "decoder_pred.weight")
    return {"model": {**kept, **decoder}, "optimizer": OPTIMIZER, "epoch": 99, "scaler": {"scale": 65536.0}, "args": ARGS}


def mocov3(kept, other, head="head"):
    state = {
        **_prefixed("module.base_encoder.", other), **_extra(f"module.base_encoder.{head}.0.weight"),
        **_prefixed("module.momentum_encoder.", kept), **_extra(f"module.momentum_encoder.{head}.0.weight"),
        **_extra("module.predictor.0.weight", "module.predictor.1.running_mean"),
    }
    return {"epoch": 100, "arch": "tiny_test_vit", "state_dict": state, "optimizer": OPTIMIZER, "scaler": {"scale": 1.0}}


def ijepa(kept, other):
    return {
        "encoder": _prefixed("module.", kept), "predictor": _extra("module.predictor_embed.weight", "module.mask_token"),
        "target_encoder": _prefixed("module.", other), "opt": OPTIMIZER, "scaler": None, "epoch": 100,
        "loss": 0.4, "batch_size": 128, "world_size": 16, "lr": 0.001,
    }


def densecl(kept, other):
    state = {
        **_prefixed("encoder_q.0.", kept), **_extra("encoder_q.1.mlp.0.weight", "encoder_q.1.mlp2.0.weight"),
        **_prefixed("encoder_k.0.", other), **_extra("encoder_k.1.mlp.0.weight"),
        **_prefixed("backbone.", kept), **_extra("queue", "queue_ptr", "queue2", "queue2_ptr"),
    }
    return {"meta": {"epoch": 200, "iter": 1000, "config": "model = dict(type='DenseCL')"}, "state_dict": state, "optimizer": OPTIMIZER}


def simsiam(kept, other):
    state = {**_prefixed("module.encoder.", kept), **_extra("module.encoder.fc.0.weight", "module.encoder.fc.6.running_mean", "module.predictor.0.weight")}
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": OPTIMIZER}


def swav(kept, other):
    state = {**_prefixed("module.", kept), **_extra("module.projection_head.0.weight", "module.prototypes.weight")}
    return {"epoch": 100, "state_dict": state, "optimizer": OPTIMIZER}


def vicreg(kept, other):
    model = {**_prefixed("module.backbone.", kept), **_extra("module.projector.0.weight", "module.projector.1.running_mean")}
    return {"epoch": 100, "model": model, "optimizer": OPTIMIZER}


def barlowtwins(kept, other):
    model = {**_prefixed("module.backbone.", kept), **_extra("module.projector.0.weight", "module.bn.running_mean", "module.bn.running_var")}
    return {"epoch": 100, "model": model, "optimizer": OPTIMIZER}


def byol(kept, other):
    return {
        **_prefixed("online_encoder.net.", other), **_extra("online_encoder.net.fc.weight", "online_encoder.projector.net.0.weight"),
        **_prefixed("target_encoder.net.", kept), **_extra("target_encoder.projector.net.0.weight", "online_predictor.net.0.weight"),
    }


def byol_trainer(kept, other):  # BYOLTrainer saves the user's network: a torchvision ResNet with its fc
    return {**kept, **_extra("fc.weight", "fc.bias")}


def esvit(kept, other, resnet=False):
    prefix = "backbone.backbone." if resnet else ""
    teacher_prefix = f"module.{prefix}" if resnet else prefix
    return {
        "student": {**_prefixed(f"module.{prefix}", other), **_extra("module.head.mlp.0.weight", "module.head_dense.mlp.0.weight")},
        "teacher": {**_prefixed(teacher_prefix, kept), **_extra("head.mlp.0.weight", "head_dense.mlp.0.weight")},
        "optimizer": OPTIMIZER, "epoch": 6, "args": ARGS, "dino_loss": {"center": torch.zeros(1, 65)},
    }


def lightning(kept, other):
    state = {
        **_prefixed("student_backbone.encoder.vit.", other), **_prefixed("teacher_backbone.encoder.vit.", kept),
        **_extra("student_head.layers.0.weight", "teacher_head.layers.0.weight"),
    }
    return {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.0", "state_dict": state,
        "optimizer_states": [OPTIMIZER], "lr_schedulers": [], "hyper_parameters": {"config": {"method": "dino"}},
    }


# (case id, architecture, checkpoint builder, expected format, expected branch)
CASES = [
    ("dino-vit", "vit", dino, "dino", "teacher"),
    ("dino-resnet", "resnet", lambda k, o: dino(k, o, resnet=True), "dino", "teacher"),
    ("ibot", "vit", ibot, "ibot", "teacher"),
    ("mae", "vit", mae, "mae", "encoder"),
    ("mocov3-vit", "vit", mocov3, "mocov3", "momentum_encoder"),
    ("mocov3-resnet", "resnet", lambda k, o: mocov3(k, o, head="fc"), "mocov3", "momentum_encoder"),
    ("ijepa", "vit_no_cls", ijepa, "ijepa", "encoder"),  # the DSE paper's branch
    ("densecl", "resnet", densecl, "densecl", "backbone"),
    ("densecl-extracted", "resnet", lambda k, o: {"state_dict": k, "author": "DenseCL"}, "state_dict", "state_dict"),
    ("simsiam", "resnet", simsiam, "simsiam", "encoder"),
    ("swav", "resnet", swav, "swav", "backbone"),
    ("vicreg", "resnet", vicreg, "vicreg", "backbone"),
    ("barlowtwins", "resnet", barlowtwins, "barlowtwins", "backbone"),
    ("vicreg-final-resnet50.pth", "resnet", lambda k, o: dict(k), "state_dict", "top"),
    ("byol", "resnet", byol, "byol", "target"),
    ("byol-trainer", "resnet", byol_trainer, "state_dict", "top"),
    ("esvit-vit", "vit", esvit, "esvit", "teacher"),
    ("esvit-resnet", "resnet", lambda k, o: esvit(k, o, resnet=True), "esvit", "teacher"),
    ("lightning", "vit", lightning, "lightning", "found"),
    ("state_dict-ddp", "vit", lambda k, o: {"model": _prefixed("module.", k)}, "state_dict", "model"),
]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("case, arch, build, expected_format, expected_branch", CASES, ids=[c[0] for c in CASES])
def test_auto_finds_official_layout_and_reproduces_tokens(tmp_path, case, arch, build, expected_format, expected_branch):
    kept, other = _weights(arch, seed=0), _weights(arch, seed=1)
    path = tmp_path / f"{case}.pth"
    torch.save(build(kept, other), path)
    name, kwargs = ARCHS[arch]

    model = build_architecture(name, kwargs)
    report = load_backbone(model, path)

    assert (report.format, report.branch) == (expected_format, expected_branch)
    assert report.share == 1.0 and set(report.loaded) == set(kept)
    reference = build_architecture(name, kwargs)
    reference.load_state_dict(kept)
    images = torch.rand(2, 3, IMAGE_SIZE[arch], IMAGE_SIZE[arch], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(dense_tokens(model, images), dense_tokens(reference, images))


@pytest.mark.parametrize("case", ["dino-vit", "mocov3-vit", "ijepa", "esvit-vit", "lightning"])
def test_the_other_branch_loads_the_other_network(case):
    arch, build, fmt = next((c[1], c[2], c[3]) for c in CASES if c[0] == case)
    kept, other = _weights(arch, seed=0), _weights(arch, seed=1)
    other_branch = {"dino": "student", "mocov3": "base_encoder", "ijepa": "target_encoder", "esvit": "student"}.get(fmt)
    name, kwargs = ARCHS[arch]
    model = build_architecture(name, kwargs)
    if other_branch is None:  # lightning: the prefix is found (teacher preferred) or given
        report = load_backbone(model, build(kept, other), fmt, prefix="student_backbone.encoder.vit.")
    else:
        report = load_backbone(model, build(kept, other), f"{fmt}:{other_branch}")
    assert report.share == 1.0
    assert all(torch.equal(model.state_dict()[k], other[k]) for k in other)


def test_checkpoint_heads_and_extras_are_reported_as_ignored():
    kept = _weights("vit", seed=0)
    report = load_backbone(build_architecture(*ARCHS["vit"]), mae(kept, kept))
    assert {"mask_token", "decoder_embed.weight", "decoder_pred.weight"} <= set(report.ignored)
    assert "decoder_embed.weight" not in report.loaded


def test_formats_that_share_a_layout_are_reported_as_ambiguous():
    kept = _weights("vit", seed=0)
    checkpoint = {"teacher": _prefixed("backbone.", kept)}  # neither dino_loss nor ibot_loss
    report = load_backbone(build_architecture(*ARCHS["vit"]), checkpoint)
    assert report.format == "dino" and report.also_matched == ("ibot",)
    assert "also fits: ibot" in report.summary()


def test_vicreg_and_barlow_twins_are_told_apart_by_barlows_batch_norm():
    kept = _weights("resnet", seed=0)
    vicreg_report = load_backbone(build_architecture("resnet18"), vicreg(kept, kept))
    barlow_report = load_backbone(build_architecture("resnet18"), barlowtwins(kept, kept))
    assert (vicreg_report.format, vicreg_report.also_matched) == ("vicreg", ("barlowtwins",))
    assert (barlow_report.format, barlow_report.also_matched) == ("barlowtwins", ())


def test_resolve_format_branches_and_unknown_names():
    assert resolve_format("ibot")[1] == FORMATS["ibot"].layouts
    assert [layout.branch for layout in resolve_format("dino:student")[1]] == ["student"]
    with pytest.raises(ValueError, match=r"unknown checkpoint format 'dinov2'.*dino, ibot"):
        resolve_format("dinov2")
    with pytest.raises(ValueError, match="has no branch 'teacher'; its branches: momentum_encoder, base_encoder"):
        resolve_format("mocov3:teacher")


def test_format_names_are_the_issue_list_in_auto_order():
    assert FORMAT_NAMES == (
        "auto", "dino", "ibot", "mae", "mocov3", "ijepa", "densecl", "simsiam", "resa", "swav",
        "vicreg", "barlowtwins", "byol", "esvit", "lightning", "state_dict",
    )


def test_wrappers_are_stripped_and_missing_containers_give_none():
    assert strip_wrappers("module.module.blocks.0.attn.qkv.weight") == "blocks.0.attn.qkv.weight"
    assert strip_wrappers("backbone.module.x") == "backbone.module.x"  # only leading wrappers
    assert extract({"student": {}}, FORMATS["dino"].layouts[0], {}) is None


def test_find_prefix_prefers_most_matches_then_ema_names_then_shorter():
    w = torch.ones(2)
    state = {"a.w": w, "a.v": w, "teacher.w": w, "model.ema.w": w}
    assert find_prefix(state, {"w": (2,), "v": (2,)}) == "a."
    assert find_prefix({"x.w": w, "momentum.w": w}, {"w": (2,)}) == "momentum."
    assert find_prefix({"x.w": w, "x.y.w": w}, {"w": (2,)}) == "x."
    assert find_prefix({"x.w": torch.ones(3)}, {"w": (2,)}) == ""  # shape must match too


def test_docs_table_lists_every_format_with_its_source_repository():
    text = (REPO / "docs" / "tracking.md").read_text()
    for fmt in FORMATS.values():
        assert f"`{fmt.name}`" in text, fmt.name
        repository = fmt.source.split()[0]
        if "/" in repository:
            assert repository in text, (fmt.name, repository)
