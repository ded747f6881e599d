"""Durable file operations: fsync of directories, atomic whole-file replacement, locked temp files."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ggufpack.store.locking import try_lock


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_locked_temp(directory: Path, suffix: str = ".tmp") -> tuple[Path, int]:
    """Create a new temp file in ``directory`` and hold an exclusive flock on it.

    ``prune`` deletes a temp only after winning its flock, so a temp whose lock we hold is never
    deleted under us. Between our create and our flock, prune may win the lock and unlink the
    name; the inode check catches that and we simply try another name.
    """
    while True:
        path = directory / f"{secrets.token_hex(12)}{suffix}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        if not try_lock(fd):
            os.close(fd)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return path, fd
        os.close(fd)


def atomic_write(path: Path, data: bytes, temp_dir: Path) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never a partial one."""
    temp, fd = create_locked_temp(temp_dir)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.rename(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    fsync_dir(path.parent)
