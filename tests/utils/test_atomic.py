"""Atomic writes: the final path holds the old or the new content, never a half-written file."""
from __future__ import annotations

import os
import stat

import pytest

from rla_pipeline.utils.atomic import atomic_dir, atomic_path, atomic_write_bytes, remove_stale_temps


def test_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "x.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]
    # finished files are readable by others like any normally written file (mkstemp alone gives 0600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_failure_inside_atomic_path_keeps_old_content(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    final = tmp_path / "ep"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(final) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError("bad episode")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep"]


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".tmp-ep.123").mkdir()
    (tmp_path / ".tmp-x.bin.456").write_bytes(b"")
    (tmp_path / "keep").write_bytes(b"")
    assert remove_stale_temps(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]
