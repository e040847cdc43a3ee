"""Collecting checkpoint files and putting them in training order."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from dse_tune.checkpoints import (
    CheckpointFile,
    CheckpointReadError,
    CheckpointSpecError,
    DuplicateEpochError,
    NoCheckpointsError,
    collect_checkpoints,
    order_checkpoints,
    read_checkpoint,
)


def write(folder, name, content=None):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content if content is not None else {"name": name}, path)
    return path


def names(order):
    return [(item.epoch, item.path.name) for item in order]


# ---------------------------------------------------------------- collect


def test_folder_keeps_checkpoint_files_only(tmp_path):
    for name in ("checkpoint0000.pth", "checkpoint0020.pth", "checkpoint.pth"):
        write(tmp_path, name)
    (tmp_path / "log.txt").write_text("epoch 1")
    (tmp_path / ".hidden.pth").write_text("")
    write(tmp_path / "sub", "ckp-1.pth")
    assert [p.name for p in collect_checkpoints(tmp_path)] == ["checkpoint.pth", "checkpoint0000.pth", "checkpoint0020.pth"]
    assert "ckp-1.pth" in [p.name for p in collect_checkpoints(tmp_path, recursive=True)]


def test_empty_folder_names_subfolders_with_checkpoints(tmp_path):
    write(tmp_path / "checkpoints", "ckp-0.pth")  # SwAV's dump_checkpoints
    (tmp_path / "stats0.pkl").write_text("")
    with pytest.raises(NoCheckpointsError, match=r"no checkpoint files .* in .*; checkpoints are in its subfolder\(s\) checkpoints/"):
        collect_checkpoints(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoCheckpointsError, match=r"no checkpoint files .* in .*empty$"):
        collect_checkpoints(tmp_path / "empty")


def test_glob(tmp_path):
    for name in ("ckp-0.pth", "ckp-10.pth", "checkpoint.pth.tar"):
        write(tmp_path / "checkpoints", name)
    assert [p.name for p in collect_checkpoints(str(tmp_path / "checkpoints" / "ckp-*.pth"))] == ["ckp-0.pth", "ckp-10.pth"]
    assert len(collect_checkpoints(str(tmp_path / "**" / "*.pth*"))) == 3
    with pytest.raises(NoCheckpointsError, match="match"):
        collect_checkpoints(str(tmp_path / "*.ckpt"))


def test_list_file_with_comments_and_relative_paths(tmp_path):
    first = write(tmp_path / "run", "epoch_10.pth")
    second = write(tmp_path / "elsewhere", "epoch_20.pth")
    listing = tmp_path / "run" / "checkpoints.txt"
    listing.write_text(f"# chosen checkpoints\n\nepoch_10.pth\n  {second}  \n# epoch_30.pth\n")
    assert collect_checkpoints(listing) == sorted([first, second])


def test_list_file_errors_name_the_line(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# header\nmissing.pth\n")
    with pytest.raises(CheckpointSpecError, match=r"list.txt:2: missing.pth is not a file"):
        collect_checkpoints(listing)
    listing.write_text("# nothing\n")
    with pytest.raises(NoCheckpointsError, match="names no checkpoint files"):
        collect_checkpoints(listing)


def test_single_file_and_nonexistent_spec(tmp_path):
    path = write(tmp_path, "model_3.pth")
    assert collect_checkpoints(path) == [path]
    with pytest.raises(CheckpointSpecError, match="is neither a folder, a file, nor a glob"):
        collect_checkpoints(tmp_path / "nope")


# ---------------------------------------------------------------- order


def test_order_is_numeric_not_lexicographic(tmp_path):
    paths = [tmp_path / n for n in ("checkpoint-100.pth", "checkpoint-99.pth", "checkpoint-5.pth")]
    order = order_checkpoints(paths)
    assert names(order) == [(5, "checkpoint-5.pth"), (99, "checkpoint-99.pth"), (100, "checkpoint-100.pth")]
    assert order.by == "epoch" and len(order) == 3
    assert order.ordered[0] == CheckpointFile(5, paths[2], None, "name")
    epoch, path = order.ordered[0][:2]  # unpacks like the (epoch, path) pair it extends
    assert (epoch, path) == (5, paths[2])


def test_duplicate_epochs_raise_naming_the_files(tmp_path):
    paths = [tmp_path / "checkpoint_0010.pth.tar", tmp_path / "epoch_10.pth", tmp_path / "epoch_20.pth"]
    with pytest.raises(DuplicateEpochError, match=r"several files for the same epoch: epoch 10: .*checkpoint_0010.pth.tar, .*epoch_10.pth") as caught:
        order_checkpoints(paths)
    assert list(caught.value.groups) == [(10, -1)]


def test_lightning_names_order_by_epoch_then_step(tmp_path):
    paths = [tmp_path / n for n in ("epoch=1-step=20.ckpt", "epoch=1-step=10.ckpt", "epoch=0-step=5.ckpt", "last.ckpt")]
    order = order_checkpoints(paths)
    assert [(i.epoch, i.step) for i in order] == [(0, 5), (1, 10), (1, 20)]
    assert [p.name for p in order.unnumbered] == ["last.ckpt"]


def test_step_only_names_order_by_step_and_mixing_kinds_is_an_error(tmp_path):
    order = order_checkpoints([tmp_path / "iter_2000.pth", tmp_path / "iter_500.pth"])
    assert order.by == "step" and [(i.epoch, i.step) for i in order] == [(None, 500), (None, 2000)]
    with pytest.raises(ValueError, match="mix epochs and steps"):
        order_checkpoints([tmp_path / "epoch_1.pth", tmp_path / "iter_500.pth"])


def test_regex_orders_names_the_rules_cannot_read(tmp_path):
    paths = [tmp_path / "run-e2-final.pt", tmp_path / "run-e10-final.pt", tmp_path / "notes.pt"]
    order = order_checkpoints(paths, regex=r"-e(\d+)-")
    assert [(i.epoch, i.source) for i in order] == [(2, "regex"), (10, "regex")]
    assert [p.name for p in order.unnumbered] == ["notes.pt"]


def test_latest_copies_are_skipped_when_symlinked_or_byte_identical(tmp_path):
    write(tmp_path, "epoch_10.pth", {"meta": {"epoch": 10}})
    last = write(tmp_path, "epoch_20.pth", {"meta": {"epoch": 20}})
    os.symlink(last, tmp_path / "latest.pth")  # mmcv
    shutil.copyfile(last, tmp_path / "checkpoint.pth.tar")  # SwAV copies the other way round; same bytes
    order = order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    assert names(order) == [(10, "epoch_10.pth"), (20, "epoch_20.pth")]
    assert sorted((p.name, reason.split(" as ")[0]) for p, reason in order.copies) == [("checkpoint.pth.tar", "same bytes"), ("latest.pth", "same file")]
    assert order.unnumbered == []


def test_unnumbered_files_stay_apart_without_read_fields(tmp_path):
    write(tmp_path, "checkpoint0000.pth", {"epoch": 1})
    write(tmp_path, "checkpoint.pth", {"epoch": 2})
    order = order_checkpoints(collect_checkpoints(tmp_path))
    assert names(order) == [(0, "checkpoint0000.pth")] and [p.name for p in order.unnumbered] == ["checkpoint.pth"]


def test_unnumbered_file_with_a_unique_stored_epoch_is_placed(tmp_path):
    write(tmp_path, "checkpoint0000.pth", {"epoch": 1})
    write(tmp_path, "checkpoint0020.pth", {"epoch": 21})
    write(tmp_path, "checkpoint.pth", {"epoch": 30})  # DINO's latest, 10 epochs after the last numbered one
    order = order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    assert [(i.epoch, i.path.name, i.source) for i in order] == [(0, "checkpoint0000.pth", "name"), (20, "checkpoint0020.pth", "name"), (30, "checkpoint.pth", "stored")]


def test_unnumbered_file_storing_the_latest_numbered_position_is_a_copy(tmp_path):
    write(tmp_path, "checkpoint0000.pth", {"epoch": 1})
    write(tmp_path, "checkpoint0020.pth", {"epoch": 21, "w": torch.ones(1)})
    write(tmp_path, "checkpoint.pth", {"epoch": 21, "w": torch.ones(1)})  # saved twice by DINO: different bytes
    order = order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    assert names(order) == [(0, "checkpoint0000.pth"), (20, "checkpoint0020.pth")]
    assert order.copies == [(tmp_path / "checkpoint.pth", "stores the same epoch/step as checkpoint0020.pth")]


def test_unnumbered_file_colliding_with_a_named_epoch_is_a_copy(tmp_path):
    write(tmp_path, "epoch_0010.pth", {"epoch": 10})
    write(tmp_path, "epoch_0020.pth", {"epoch": 20})
    write(tmp_path, "final.pth", {"epoch": 10, "other": 1})
    order = order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    assert [p.name for p, _ in order.copies] == ["final.pth"] and "epoch 10, which a numbered file already has" in order.copies[0][1]


def test_unreadable_unnumbered_files_are_reported_not_raised(tmp_path):
    write(tmp_path, "epoch_1.pth", {"epoch": 1})
    (tmp_path / "last.ckpt").write_bytes(b"partial")
    order = order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    assert names(order) == [(1, "epoch_1.pth")]
    assert [p.name for p, _ in order.unreadable] == ["last.ckpt"]


def test_only_unnumbered_files_are_ordered_by_stored_fields(tmp_path):
    write(tmp_path, "a.pth", {"epoch": 5})
    write(tmp_path, "b.pth", {"epoch": 2})
    write(tmp_path, "c.pth", {"epoch": 5, "different": True})
    with pytest.raises(DuplicateEpochError, match=r"epoch 5: .*a.pth, .*c.pth"):
        order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    (tmp_path / "c.pth").unlink()
    assert names(order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)) == [(2, "b.pth"), (5, "a.pth")]


def test_read_errors_of_a_custom_reader_are_reported_with_their_cause(tmp_path):
    def broken(path):
        raise CheckpointReadError(path, "truncated")

    order = order_checkpoints([tmp_path / "last.pth"], read_fields=broken)
    assert order.unreadable == [(tmp_path / "last.pth", "truncated")] and not order.ordered


def test_an_unreadable_numbered_file_does_not_make_an_unnumbered_one_unreadable(tmp_path):
    write(tmp_path, "epoch_1.pth", {"epoch": 1})
    (tmp_path / "epoch_2.pth").write_bytes(b"partial")  # the latest numbered file is still being written
    write(tmp_path, "last.pth", {"epoch": 3})
    order = order_checkpoints(collect_checkpoints(tmp_path), read_fields=read_checkpoint)
    assert names(order) == [(1, "epoch_1.pth"), (2, "epoch_2.pth"), (3, "last.pth")] and order.unreadable == []
