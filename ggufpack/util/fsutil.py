"""Durable file operations: fsync of directories, atomic whole-file replacement, locked temp files.

A full disk (ENOSPC, EDQUOT) while writing is a :class:`DiskFullError` naming what was being
written, raised only once the temp file is gone: the store is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ggufpack.errors import NO_SPACE_ERRNOS, DiskFullError, GGUFPackError
from ggufpack.util.locking import try_lock


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


@contextmanager
def disk_full_as_error(path: object) -> Iterator[None]:
    """Turn an ENOSPC/EDQUOT ``OSError`` in the body into a :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError.from_os_error(exc, path) from exc
        raise


def read_small_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes, for reading back state that
    anyone able to write the store could have planted: a symlink is not followed, a FIFO or device
    never blocks nor streams forever. ``OSError`` when unreadable, :class:`GGUFPackError` otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise GGUFPackError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise GGUFPackError(f"{path} is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise GGUFPackError(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_real_dir(path: Path) -> bool:
    """A directory, not a symlink to one (nor anything else); False when it is missing."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _walk_store_dir(root: Path, relative: str, create: bool) -> tuple[Path, Path | None]:
    """``root/relative`` and the first directory on the way there that is not a real one (None: none)."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"not a relative path inside the store: {relative!r}")
    if create:
        root.mkdir(parents=True, exist_ok=True)  # the root itself may well be a symlink: that is the user's
    path = root
    for part in parts:
        path = path / part
        if create:
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=0o755)
        if not is_real_dir(path):
            return root.joinpath(*parts), path
    return path, None


def store_dir(root: Path, relative: str) -> Path | None:
    """``root/relative`` when every directory below ``root`` down to it is a real directory, else None.

    State under a store that others can write (a shared store, an unpacked archive) may hold planted
    symlinks; what ggufpack writes or deletes there must stay inside the store, so a symlink on the way
    (or a file where a directory should be) means there is no such directory. The root itself may be
    a symlink (``GGUFPACK_HOME`` is the user's choice)."""
    path, blocker = _walk_store_dir(root, relative, create=False)
    return path if blocker is None else None


def ensure_store_dir(root: Path, relative: str) -> Path:
    """``root/relative``, made where missing (never inside a symlinked directory); a
    :class:`GGUFPackError` naming the symlink (or file) in the way, or why it cannot be made."""
    target = root.joinpath(*PurePosixPath(relative).parts)
    try:
        with disk_full_as_error(target):
            path, blocker = _walk_store_dir(root, relative, create=True)
    except OSError as exc:
        raise GGUFPackError(f"cannot create {target}: {exc.strerror}") from None
    if blocker is not None:
        raise GGUFPackError(f"{blocker} is a symlink or not a directory, where the store keeps a directory of its "
                            f"own: remove it and try again (nothing is written through it)")
    return path


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


def atomic_write(path: Path, data: bytes, temp_dir: Path, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``): readers see the old or the new file, never a
    partial one. A full disk is a :class:`DiskFullError`, with ``path`` as it was."""
    with disk_full_as_error(path):
        temp, fd = create_locked_temp(temp_dir)
        try:
            if mode != 0o644:
                os.fchmod(fd, mode)
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
