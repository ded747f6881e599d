"""Blob downloads that resume, and that never let unverified bytes into the store.

A blob is fetched into ``<store>/state/downloads/<hex>.partial``. If a pull is cut, the next one
asks for the rest with a ``Range`` request (a registry that ignores the range gets a fresh start).
Only when the size and the SHA-256 of the whole file match the descriptor (checked by
:meth:`~ggufpack.store.Store.adopt_blob`, the store's one way in for a finished download) does the
file move into ``blobs/``; a mismatch deletes the partial file and fails the pull, and the store is as before.
A registry that sends more bytes than the descriptor says is refused as soon as it does (the partial
file is dropped: resuming it would not help). A partial file is only ever a regular file of ours: a
symlink or anything else in its place is removed, never written through. A full disk (ENOSPC,
EDQUOT) is a :class:`DiskFullError` saying how much the partial file keeps: a pull run again once
there is space resumes from there, and ``ggufpack prune`` reclaims it meanwhile.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import requests

from ggufpack.errors import DiskFullError, GGUFPackError, shown
from ggufpack.oci.descriptor import Descriptor
from ggufpack.progress import Bar
from ggufpack.registry.client import RegistryClient, RegistryError, header_int
from ggufpack.store import Store
from ggufpack.store.ingest import ContentMismatchError
from ggufpack.store.layout import digest_hex, state_path
from ggufpack.terminal import human_size
from ggufpack.util.fsutil import ensure_store_dir, is_disk_full
from ggufpack.util.locking import locked

#: bytes per read from the socket; a cut connection loses at most the read in progress
_CHUNK = 256 * 1024


def _partial_path(store: Store, digest: str) -> Path:
    directory = ensure_store_dir(store.root, state_path("downloads"))  # never through a planted symlink
    return directory / f"{digest_hex(digest)}.partial"


def _partial_size(partial: Path) -> int:
    """The bytes a partial download holds; anything but a regular file there is removed (0)."""
    try:
        st = partial.lstat()
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISDIR(st.st_mode):
        raise GGUFPackError(f"{partial} is a directory, not a partial download: remove it")
    partial.unlink()  # a symlink, a FIFO, a device: not ours, never written through
    return 0


def fetch_blob(store: Store, client: RegistryClient, repository: str, blob: Descriptor, bar: Bar) -> int | None:
    """Make sure ``blob`` is in the store, downloading what is missing.

    Returns the bytes received from the registry (less than the blob's size for a resumed download),
    or None when the store already had the blob.
    """
    if not blob.digest.startswith("sha256:"):
        raise GGUFPackError(f"blob {blob.digest}: only sha256 digests are supported")
    if store.has_blob(blob.digest):
        bar.update(blob.size)
        return None
    partial = _partial_path(store, blob.digest)
    with locked(partial.with_suffix(".lock")):  # two pulls of one blob: the second waits, then finds it
        if store.has_blob(blob.digest):
            bar.update(blob.size)
            return None
        offset = _partial_size(partial)
        if offset > blob.size:
            offset = 0
        if offset and offset == blob.size:  # all there (cut before it was stored): a range request would get 416
            received = 0
            bar.update(offset)
        else:
            received = _download(client, repository, blob, partial, offset, bar)
        try:
            store.adopt_blob(partial, blob.digest, blob.size)  # checks the size and the digest
        except ContentMismatchError as exc:
            raise GGUFPackError(
                f"blob {blob.digest} from {client.registry}/{repository} failed verification (its bytes hash to "
                f"{exc.digest}); nothing was stored. The registry's copy is corrupt or was tampered with."
            ) from None
    return received


def _too_long(client: RegistryClient, repository: str, blob: Descriptor, sent: int | str) -> GGUFPackError:
    return GGUFPackError(
        f"blob {blob.digest[:19]} from {client.registry}/{repository}: the registry sent {sent} bytes, more than the "
        f"{blob.size} its descriptor says; refused, nothing was stored (so it cannot match its digest)"
    )


def _disk_full(exc: OSError, partial: Path, blob: Descriptor) -> DiskFullError:
    """A full disk mid-download: the partial file keeps what was written, and the message says how much, that
    the next pull resumes from there, and that ``ggufpack prune`` reclaims it meanwhile."""
    try:
        kept = partial.lstat().st_size
    except OSError:
        kept = 0
    advice = (f"{human_size(kept)} of the {human_size(blob.size)} of blob {blob.digest[:19]} are kept there, so that "
              "the pull run again once there is space resumes; to reclaim them now (and what no image needs), "
              "run ggufpack prune")
    return DiskFullError.from_os_error(exc, partial, advice)


def _range_start(resp: requests.Response, what: str) -> int:
    """Where the bytes of a 206 answer start, from its ``Content-Range: bytes START-END/TOTAL``."""
    value = resp.headers.get("Content-Range", "")
    match = re.fullmatch(r"bytes ([0-9]{1,19})-[0-9]{1,19}/(?:[0-9]{1,19}|\*)", value.strip())
    if not match:
        raise RegistryError(f"{what}: a partial answer (206) with the Content-Range {shown(value)}")
    return int(match.group(1))


def _write_from(resp: requests.Response, partial: Path, offset: int, size: int, bar: Bar) -> int:
    """Write the body of ``resp`` into ``partial`` from ``offset``, stopping past ``size``; the end offset."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        received = offset
        try:
            for chunk in resp.iter_content(_CHUNK):
                received += len(chunk)
                if received > size:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                bar.update(len(chunk))
        except requests.exceptions.RequestException:
            pass  # a cut connection: reported by the caller as a short read, resumable
    finally:
        os.close(fd)
    return received


def _download(client: RegistryClient, repository: str, blob: Descriptor, partial: Path, offset: int,
              bar: Bar) -> int:
    """Fetch from ``offset`` to the end into ``partial``; the bytes received (the store verifies the whole
    file when it adopts it)."""
    what = f"blob {blob.digest[:19]} from {client.registry}/{repository}"
    resp = client.get_blob(repository, blob.digest, offset)
    with resp:
        if offset and resp.status_code == 200:  # the range was ignored: start over
            offset = 0
        if resp.status_code == 206 and _range_start(resp, what) != offset:
            raise RegistryError(f"{what}: asked for the bytes from {offset}, the registry sent others")
        announced = header_int(resp, "Content-Length", what) if "Content-Encoding" not in resp.headers else None
        if announced is not None and offset + announced > blob.size:
            partial.unlink(missing_ok=True)
            raise _too_long(client, repository, blob, offset + announced)
        bar.update(offset)
        try:
            received = _write_from(resp, partial, offset, blob.size, bar)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise _disk_full(exc, partial, blob) from exc
    if received > blob.size:
        partial.unlink(missing_ok=True)
        raise _too_long(client, repository, blob, f"at least {received}")
    if received != blob.size:
        raise GGUFPackError(f"{what}: got {received} of {blob.size} bytes (the connection ended early); "
                            "run the pull again to resume")
    return received - offset
