"""Atomic writes: the target is whole or untouched, and no temporary file is left."""

from __future__ import annotations

import pytest

from dse_tune.atomic import atomic_write, atomic_write_text


def test_writes_the_text_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "history.json"
    assert atomic_write_text(target, "{}\n") == target
    assert target.read_text() == "{}\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["history.json"]


def test_a_failing_write_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "history.json"
    target.write_text("old")

    def fail(temporary):
        temporary.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_written_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "result.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
