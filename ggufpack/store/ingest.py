"""Writing content into the store the containerd way: into a temp file under ``ingest/`` while
hashing, then fsync, verify the digest, and rename into its content-addressed place. Readers never
see a partial blob, and a crash leaves only a temp file that ``prune`` removes. A full disk drops
the temp file at once and is a :class:`DiskFullError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ggufpack.errors import DiskFullError, GGUFPackError
from ggufpack.store.copying import copy_range
from ggufpack.util.fsutil import create_locked_temp, disk_full_as_error, fsync_dir, is_disk_full

_FLUSH_AT = 1 << 20


class ContentMismatchError(GGUFPackError):
    """Content that is not what its descriptor says (another digest or size); nothing was stored."""

    def __init__(self, message: str, *, digest: str, size: int) -> None:
        super().__init__(message)
        #: what the content really is
        self.digest = digest
        self.size = size


def verify_content(digest: str, size: int, expected_digest: str | None, expected_size: int | None) -> None:
    """The one check every way into the store makes (:meth:`IngestWriter.commit`,
    :meth:`~ggufpack.store.Store.adopt_blob`): the size and the digest, each when expected."""
    if expected_size is not None and size != expected_size:
        raise ContentMismatchError(
            f"content size mismatch: expected {expected_size} bytes, got {size} ({digest}); "
            "the source is corrupt or changed while being read: fetch it again", digest=digest, size=size,
        )
    if expected_digest is not None and digest != expected_digest:
        raise ContentMismatchError(
            f"content digest mismatch: expected {expected_digest}, got {digest} ({size} bytes); "
            "the source is corrupt or changed while being read: fetch it again", digest=digest, size=size,
        )


class IngestWriter:
    """An append-only, hashing writer; file-like enough for ``tarfile`` and ``gzip`` to write into.

    The writer holds an flock on its temp file from creation to commit or abort, which is how
    ``prune`` tells an in-flight ingest from a crashed one.
    """

    def __init__(self, ingest_dir: Path, target_dir: Path) -> None:
        self._target_dir = target_dir
        with disk_full_as_error(target_dir):
            self._temp, self._fd = create_locked_temp(ingest_dir)
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._flushed = 0
        self._closed = False
        #: the disk filled up: every later call raises this again (gzip and tarfile write their
        #: trailers while the error unwinds; they must meet the same clear error, not another one)
        self._failed: DiskFullError | None = None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes written so far (``tarfile`` asks for it)."""
        return self._flushed + len(self._buffer)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        self._hash.update(data)
        if not self._buffer and len(data) >= _FLUSH_AT:
            self._pwrite_all(data)
        else:
            self._buffer += data
            if len(self._buffer) >= _FLUSH_AT:
                self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            pending = bytes(self._buffer)
            self._buffer.clear()
            self._pwrite_all(pending)

    def _pwrite_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        with self._writing():
            while view:
                written = os.pwrite(self._fd, view, self._flushed)
                view = view[written:]
                self._flushed += written

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """On a full disk in the body: drop the temp file now (its space comes back) and raise our error."""
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.abort()
            self._failed = DiskFullError.from_os_error(exc, self._target_dir)
            raise self._failed from exc

    def write_from_file(self, path: Path, offset: int = 0, length: int | None = None) -> bool:
        """Append ``length`` bytes of ``path`` from ``offset`` (to its end when None).

        Shares extents with ``path`` when the filesystem supports it and the offsets are block
        aligned; returns True when it did.
        """
        self._check_open()
        self.flush()
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if length is None:
                length = size - offset
            if offset < 0 or length < 0 or offset + length > size:
                raise GGUFPackError(f"{path} has {size} bytes; cannot read {length} bytes at offset {offset}")
            with self._writing():
                cloned = copy_range(source.fileno(), offset, self._fd, self._flushed, length, self._hash)
        self._flushed += length
        return cloned

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> tuple[str, int]:
        """Make the content durable and visible under its digest, once it is the size and the digest
        expected (when given: :class:`ContentMismatchError` otherwise); returns ``(digest, size)``."""
        self._check_open()
        try:
            self.flush()
            with self._writing():  # fsync can be where a delayed write meets the full disk
                os.fsync(self._fd)
            digest = "sha256:" + self._hash.hexdigest()
            size = self._flushed
            verify_content(digest, size, expected_digest, expected_size)
            target = self._target_dir / digest.split(":", 1)[1]
            if target.exists():
                self._temp.unlink()
            else:
                os.fchmod(self._fd, 0o444)
                os.rename(self._temp, target)
                fsync_dir(self._target_dir)
        except BaseException:
            self.abort()
            raise
        self._close()
        return digest, size

    def abort(self) -> None:
        """Drop the temp file; safe to call more than once."""
        if self._closed:
            return
        self._temp.unlink(missing_ok=True)
        self._close()

    def _close(self) -> None:
        self._closed = True
        os.close(self._fd)

    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise ValueError("this writer was already committed or aborted")
