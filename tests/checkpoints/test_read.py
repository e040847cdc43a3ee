"""Reading checkpoint files: weights-only, the official pickled ``args`` allowed, clear errors."""

from __future__ import annotations

import argparse
import pathlib
import sys
import types

import pytest
import torch
from torch import nn

from dse_tune.checkpoints import CheckpointReadError, UntrustedCheckpointError, is_checkpoint_file, read_checkpoint


class Marker:
    """A user class pickled into a checkpoint (importable as tests.checkpoints.test_read.Marker)."""

    def __init__(self, value=1):
        self.value = value


def test_plain_checkpoint_round_trips(tmp_path):
    path = tmp_path / "checkpoint_0001.pth.tar"
    torch.save({"epoch": 2, "state_dict": {"w": torch.arange(3)}}, path)
    content = read_checkpoint(path)
    assert content["epoch"] == 2 and torch.equal(content["state_dict"]["w"], torch.arange(3))


def test_official_args_namespace_loads_without_trust_as_a_simple_namespace(tmp_path):
    path = tmp_path / "checkpoint0000.pth"
    args = argparse.Namespace(arch="vit_small", patch_size=16, lr=0.0005, output_dir=pathlib.PosixPath("/runs/dino"))
    torch.save({"teacher": {"backbone.w": torch.ones(1)}, "epoch": 1, "args": args}, path)
    content = read_checkpoint(path)
    assert isinstance(content["args"], types.SimpleNamespace)
    assert (content["args"].arch, content["args"].patch_size) == ("vit_small", 16)
    assert str(content["args"].output_dir) == "/runs/dino"


def test_other_pickled_objects_need_trust_and_are_named(tmp_path):
    path = tmp_path / "model_10.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": Marker(3)}, path)
    with pytest.raises(UntrustedCheckpointError, match=r"model_10.pth: it pickles tests\.checkpoints\.test_read\.Marker.*trust=True") as caught:
        read_checkpoint(path)
    assert caught.value.unsafe_globals == ["tests.checkpoints.test_read.Marker"]
    assert isinstance(caught.value, CheckpointReadError)  # a tracker may catch both as one
    assert read_checkpoint(path, trust=True)["extra"].value == 3


def test_whole_pickled_module_becomes_its_state_dict_when_trusted(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 3), path)
    with pytest.raises(UntrustedCheckpointError):
        read_checkpoint(path)
    assert sorted(read_checkpoint(path, trust=True)) == ["bias", "weight"]


@pytest.mark.parametrize(
    "content, cause",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"definitely not a torch file", r"not a torch checkpoint \(Unsupported operand"),
        (bytes(range(256)) * 8, "damaged, still being written, or not a torch checkpoint"),
    ],
)
def test_broken_files_raise_read_errors_naming_path_and_cause(tmp_path, content, cause):
    path = tmp_path / "checkpoint0100.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointReadError, match=cause) as caught:
        read_checkpoint(path)
    assert caught.value.path == str(path) and str(path) in str(caught.value)


def test_truncated_file_raises_read_error(tmp_path):
    path = tmp_path / "checkpoint0100.pth"
    torch.save({"teacher": {"w": torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:1500])  # a file still being written
    with pytest.raises(CheckpointReadError, match=r"checkpoint0100.pth: damaged, still being written, or not a torch checkpoint \(RuntimeError: PytorchStreamReader failed"):
        read_checkpoint(path)


def test_folder_and_non_dict_content_are_read_errors(tmp_path):
    with pytest.raises(CheckpointReadError, match="it is a folder"):
        read_checkpoint(tmp_path)
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), path)
    with pytest.raises(CheckpointReadError, match="it holds a Tensor, not a dict of weights"):
        read_checkpoint(path)


def test_safetensors_round_trip_and_truncation(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"blocks.0.w": torch.ones(4)}, str(path))
    assert torch.equal(read_checkpoint(path)["blocks.0.w"], torch.ones(4))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointReadError, match="model.safetensors"):
        read_checkpoint(path)


def test_safetensors_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"{}")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # import now fails
    with pytest.raises(CheckpointReadError, match="needs the safetensors package"):
        read_checkpoint(path)


def test_checkpoint_suffixes():
    names = ["a.pth", "b.PT", "c.pth.tar", "epoch=1.ckpt", "pytorch_model.bin", "m.safetensors"]
    assert all(is_checkpoint_file(n) for n in names)
    assert not any(is_checkpoint_file(n) for n in ["log.txt", "a.tar", "queue0.pth.tmp", "config.json"])


def test_legacy_format_files_name_their_pickled_objects_too(tmp_path):
    path = tmp_path / "ckp-10.pth"  # SwAV-era files may predate torch's zip format
    torch.save({"epoch": 11, "args": argparse.Namespace(a=1), "extra": Marker()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UntrustedCheckpointError, match=r"it pickles tests\.checkpoints\.test_read\.Marker"):
        read_checkpoint(path)
    torch.save({"epoch": 11, "args": argparse.Namespace(a=1)}, path, _use_new_zipfile_serialization=False)
    assert read_checkpoint(path)["args"].a == 1
