"""Leases: a running server keeps the image it serves (its blobs and runnable files) out of ``prune``.

```
<root>/state/leases/<id>.json   one per server: the manifest descriptor it serves and its runnable files
```

A lease is held by an flock on its file, not by a pid: the process that takes it (``ggufpack run``)
holds the lock and hands the open file on to the server it starts, so the lock lives exactly as
long as the last of them. A detached server keeps it after ``run --detach`` returns; a server that
dies (SIGKILL, a crash, a reboot) drops it with its process, so a lease never outlives its server
and a reused pid can never keep one alive. ``prune`` keeps what a held lease names and deletes the
leases no one holds; a held lease also keeps its image resolvable by ID after its last ref is
removed (``list`` shows it as ``<none>``, as Docker shows an untagged image a running container
uses), so the server can be started again from it.

A lease file is read back from a store others may write: it is opened without following
symlinks, never blocks (FIFOs), is bounded, and every field is checked; one that fails is ignored
(and deleted by ``prune`` once no one holds it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from ggufpack.errors import GGUFPackError
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.reader import parse_descriptor, parse_digest
from ggufpack.store.index import ImageRecord, check_rfc3339
from ggufpack.store.layout import Layout, state_path
from ggufpack.util.fsutil import create_locked_temp, disk_full_as_error, ensure_store_dir, fsync_dir, store_dir
from ggufpack.util.locking import try_lock

LEASES = state_path("leases")
_NAME = re.compile(r"[0-9a-f]{12,64}\.json")
#: a lease is a few hundred bytes per file it names; anything much bigger is not one of ours
_MAX_LEASE_BYTES = 4 << 20
_MAX_FILES = 100_000


def new_id() -> str:
    return secrets.token_hex(6)


class Lease:
    """A lease this process holds: ``fd`` carries its lock (hand it to the server, see ``pass_fds``)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    def release(self) -> None:
        """Drop the lease now (its file goes; a server that inherited ``fd`` no longer keeps anything)."""
        if self.fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def hand_over(self) -> None:
        """Close this process's hold, leaving the lease to the processes that inherited ``fd`` (a
        detached server): it ends when they do."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def take(layout: Layout, record: ImageRecord, files: tuple[str, ...] = (), lease_id: str | None = None) -> Lease:
    """Hold ``record``'s image (its manifest, what it reaches, its files and ``files``) until the
    returned lease is released or every process holding its fd is gone.

    The caller holds :meth:`~ggufpack.store.Store.lease` from resolving the image to here, so that no
    ``prune`` runs in between."""
    lease_id = lease_id or new_id()
    if not _NAME.fullmatch(f"{lease_id}.json"):
        raise ValueError(f"a lease id is 12 to 64 hex digits, not {lease_id!r}")
    directory = ensure_store_dir(layout.root, LEASES)
    document = {
        "image": record.descriptor.to_json(),
        "created": record.created,
        "files": sorted(set(record.files) | set(files)),
    }
    path = directory / f"{lease_id}.json"
    with disk_full_as_error(path):
        temp, fd = create_locked_temp(layout.ingest)  # locked from birth: never seen unheld under its name
        try:
            data = memoryview(json.dumps(document, indent=1).encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            os.rename(temp, path)
            fsync_dir(directory)
        except BaseException:
            temp.unlink(missing_ok=True)
            os.close(fd)
            raise
    return Lease(path, fd)


def _parse(raw: bytes, name: str) -> ImageRecord:
    where = f"lease {name}"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise GGUFPackError(f"{where} is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"image", "created", "files"}:
        raise GGUFPackError(f"{where} is not a lease (image, created, files)")
    files = data["files"]
    if not isinstance(files, list) or len(files) > _MAX_FILES:
        raise GGUFPackError(f"{where}: files is not a list of digests")
    created = data["created"]
    if not isinstance(created, str):
        raise GGUFPackError(f"{where}: created is not a time")
    descriptor = parse_descriptor(data["image"], where)
    return ImageRecord(
        Descriptor(descriptor.media_type, descriptor.digest, descriptor.size),
        (), check_rfc3339(created) if created else "", tuple(parse_digest(f, where) for f in files),
    )


def _read(fd: int) -> bytes:
    if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_size > _MAX_LEASE_BYTES:
        raise GGUFPackError("not a regular file of a lease's size")
    chunks, size = [], 0
    while size <= _MAX_LEASE_BYTES and (chunk := os.pread(fd, _MAX_LEASE_BYTES + 1 - size, size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _scan(layout: Layout, remove_stale: bool) -> Iterator[ImageRecord]:
    """The images of the leases someone holds; with ``remove_stale`` (``prune``, which holds the GC lock
    exclusively, so no lease is being taken), the files of the others are deleted."""
    directory = store_dir(layout.root, LEASES)
    if directory is None:
        return
    for path in sorted(directory.iterdir()):
        try:
            # never blocks on a FIFO; a symlink (ELOOP) is no lease of ours
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            if remove_stale and path.is_symlink():
                path.unlink(missing_ok=True)
            continue
        try:
            if try_lock(fd):  # no one holds it: its server is gone
                if remove_stale and not stat.S_ISDIR(os.fstat(fd).st_mode):
                    path.unlink(missing_ok=True)
                continue
            if not _NAME.fullmatch(path.name):
                continue
            with contextlib.suppress(GGUFPackError):
                yield _parse(_read(fd), path.name)
        finally:
            os.close(fd)


def held_images(layout: Layout) -> list[ImageRecord]:
    """The images some running server holds a lease on (without refs; one record per image)."""
    found: dict[str, ImageRecord] = {}
    for record in _scan(layout, remove_stale=False):
        found.setdefault(record.descriptor.digest, record)
    return list(found.values())


def held_roots(layout: Layout) -> Iterator[tuple[str, str | None]]:
    """For ``prune`` (GC lock held exclusively): the roots held leases keep, deleting stale leases."""
    for record in _scan(layout, remove_stale=True):
        yield record.descriptor.digest, record.descriptor.media_type
        for digest in record.files:
            yield digest, "file"
