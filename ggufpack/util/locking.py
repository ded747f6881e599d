"""``flock`` helpers: the store lock, the GC lease lock and the locks held on ingest files.

``flock`` locks belong to an open file description, so they vanish with the process that held them
(SIGKILL included): a crashed build never leaves the store locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ggufpack.errors import GGUFPackError


def try_lock(fd: int, *, exclusive: bool = True) -> bool:
    """Take a lock on ``fd`` without waiting; False when another open file holds a conflicting one."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def locked(path: Path, *, exclusive: bool = True, blocking: bool = True) -> Iterator[bool]:
    """Hold a lock on ``path`` (created if absent) for the ``with`` body.

    Yields True when the lock is held; with ``blocking=False`` it yields False instead of waiting,
    and the body decides what to do.
    """
    try:
        # never through a symlink: a planted one would make us create (or lock) a file elsewhere
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise GGUFPackError(f"{path} is a symlink, not a lock file of ggufpack's: remove it") from None
        raise
    try:
        if blocking:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield True
        else:
            yield try_lock(fd, exclusive=exclusive)
    finally:
        os.close(fd)
