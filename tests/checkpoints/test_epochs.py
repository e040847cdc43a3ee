"""Epochs and steps from file names and from stored fields."""

from __future__ import annotations

import pytest
import torch

from dse_tune.checkpoints import Position, epoch_from_checkpoint, parse_epoch, parse_position, stored_position
from dse_tune.checkpoints.epochs import file_stem

# file name -> (epoch, step) the name carries
NAMES = {
    "checkpoint0100.pth": (100, None),  # DINO, iBOT, EsViT
    "checkpoint0000.pth": (0, None),
    "checkpoint-99.pth": (99, None),  # MAE
    "checkpoint_0100.pth.tar": (100, None),
    "checkpoint_0099.pth.tar": (99, None),  # MoCo v3, SimSiam
    "epoch_100.pth": (100, None),  # mmcv (DenseCL)
    "ckp-100.pth": (100, None),  # SwAV
    "model_100.pth": (100, None),
    "resnet50_100.pth.tar": (100, None),
    "ijepa-ep100.pth.tar": (100, None),
    "jepa-ep300.pth.tar": (300, None),  # I-JEPA's default tag
    "checkpoint.3.pt": (3, None),  # lucidrains BYOL trainer
    "epoch=0010.ckpt": (10, None),  # Lightning
    "epoch=0010-step=000500.ckpt": (10, 500),
    "epoch=9-val_loss=0.52.ckpt": (9, None),
    "step=500.ckpt": (None, 500),
    "iter_5000.pth": (None, 5000),  # mmcv iteration runner
    "CHECKPOINT0042.PTH": (42, None),
    "100.pth": (100, None),
    "ckpt_7.safetensors": (7, None),
    "checkpoint.pth": (None, None),  # "latest" copies
    "checkpoint.pth.tar": (None, None),
    "last.ckpt": (None, None),
    "last-v1.ckpt": (None, None),
    "latest.pth": (None, None),
    "jepa-latest.pth.tar": (None, None),
    "model_best.pth.tar": (None, None),
    "checkpoint_NaN.pth": (None, None),  # EsViT's dump on NaN loss
    "resnet50.pth": (None, None),  # the 50 belongs to the architecture's name
    "dino_deitsmall16_pretrain.pth": (None, None),
}


@pytest.mark.parametrize("name, expected", NAMES.items(), ids=list(NAMES))
def test_names(name, expected):
    assert parse_position(f"/runs/x/{name}") == Position(*expected)
    assert parse_epoch(name) == expected[0]


def test_regex_named_groups_first_group_or_whole_match():
    assert parse_position("run-e12-s300.pt", regex=r"e(?P<epoch>\d+)-s(?P<step>\d+)") == Position(12, 300)
    assert parse_epoch("weights_at_12.pt", regex=r"at_(\d+)") == 12
    assert parse_epoch("12.weights.pt", regex=r"^\d+") == 12
    assert parse_epoch("checkpoint0100.pth", regex=r"nope(\d+)") is None  # the regex replaces the rules


def test_regex_errors_name_the_regex():
    with pytest.raises(ValueError, match=r"epoch regex '\(' is not a valid regular expression"):
        parse_epoch("a.pth", regex="(")
    with pytest.raises(ValueError, match=r"matched 'ab' in 'ab.pth'; its group must match digits only"):
        parse_epoch("ab.pth", regex=r"(\w+)\.pth")


def test_file_stem_strips_only_checkpoint_endings():
    assert [file_stem(n) for n in ("a.pth.tar", "b.ckpt", "c.tar", "d.v2.pt")] == ["a", "b", "c", "d.v2"]


@pytest.mark.parametrize(
    "checkpoint, expected",
    [
        ({"epoch": 21, "teacher": {}}, (21, None)),  # DINO (epoch + 1)
        ({"epoch": 3, "global_step": 120, "state_dict": {}}, (3, 120)),  # Lightning
        ({"meta": {"epoch": 200, "iter": 40000}, "state_dict": {}}, (200, 40000)),  # mmcv
        ({"epoch": torch.tensor(7), "step": torch.tensor(70)}, (7, 70)),
        ({"epoch": 1.5, "step": True}, (None, None)),  # neither a float nor a bool is a position
        ({"state_dict": {}}, (None, None)),
    ],
)
def test_stored_fields(checkpoint, expected):
    assert stored_position(checkpoint) == Position(*expected)
    assert epoch_from_checkpoint(checkpoint) == expected[0]
