"""Atomic file and directory writes: write to a temporary sibling, then rename.

A crash or ``kill -9`` at any point leaves either the old content or the new content under the final
path, never a half-written file. Temporary siblings start with ``.tmp-`` so readers can ignore them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the usual 0666 & ~umask like any other written file.
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to ``path``; on success it is renamed onto ``path``.

    For libraries that insist on writing to a path themselves (``torch.save``, ``safetensors``, pyarrow).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, _FILE_MODE)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(final_dir: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``final_dir``; on success it replaces ``final_dir``.

    On any exception the temporary directory is removed and ``final_dir`` is left untouched.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + final_dir.name + ".", dir=final_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_current_umask())
        yield tmp
        if final_dir.exists():
            if not replace:
                raise FileExistsError(f"{final_dir} already exists")
            old = final_dir.with_name(f"{TMP_PREFIX}old-{final_dir.name}-{os.getpid()}")
            os.replace(final_dir, old)
            os.replace(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final_dir.parent)


def remove_stale_temps(folder: str | os.PathLike, min_age_s: float = 0.0) -> int:
    """Delete leftovers of interrupted atomic writes directly under ``folder``; returns how many.

    ``min_age_s > 0`` spares younger leftovers: with several writer processes, a young temp file may be another
    process's write in progress.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    now = time.time()
    for p in folder.iterdir():
        if not p.name.startswith(TMP_PREFIX):
            continue
        try:
            if min_age_s > 0 and now - p.stat().st_mtime <= min_age_s:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
        except FileNotFoundError:  # another process finished or removed it meanwhile
            continue
        n += 1
    return n
