"""Copy a byte range between files while hashing it, sharing extents (reflink) where the
filesystem can (btrfs, XFS, bcachefs): then a GGUF held both as a layer blob and as a runnable
file costs its size once.

``copy_file_range`` is deliberately not used: we must read every byte to hash it anyway, and a
user-space read+write is then one pass instead of an in-kernel copy plus a second read.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Protocol

FICLONE = 0x40049409
FICLONE_RANGE = 0x4020940D
CHUNK = 8 << 20
# Errors meaning "this filesystem or these offsets cannot share extents": fall back to copying.
_NO_CLONE = {
    errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF, errno.EPERM,
}


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _try_clone(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> bool:
    try:
        if src_offset == 0 and dst_offset == 0 and length == os.fstat(src_fd).st_size:
            fcntl.ioctl(dst_fd, FICLONE, src_fd)
        else:
            fcntl.ioctl(dst_fd, FICLONE_RANGE, struct.pack("qQQQ", src_fd, src_offset, length, dst_offset))
    except OSError as exc:
        if exc.errno in _NO_CLONE:
            return False
        raise
    return True


def _read_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(errno.EIO, f"file ended early: wanted {length} bytes at offset {offset}")
    return data


def copy_range(
    src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int, hasher: Hasher
) -> bool:
    """Copy ``length`` bytes, feeding them to ``hasher``; True when the extents were shared."""
    cloned = length > 0 and _try_clone(src_fd, src_offset, dst_fd, dst_offset, length)
    done = 0
    while done < length:
        n = min(CHUNK, length - done)
        if cloned:
            hasher.update(_read_exact(dst_fd, n, dst_offset + done))
        else:
            data = _read_exact(src_fd, n, src_offset + done)
            hasher.update(data)
            view = memoryview(data)
            position = dst_offset + done
            while view:
                written = os.pwrite(dst_fd, view, position)
                view, position = view[written:], position + written
        done += n
    return cloned
