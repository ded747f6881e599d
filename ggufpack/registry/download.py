"""Blob downloads that resume, and that never let unverified bytes into the store.

A blob is fetched into ``<store>/state/downloads/<hex>.partial``. If a pull is cut, the next one
re-hashes what is there and asks for the rest with a ``Range`` request (a registry that ignores the
range gets a fresh start). Only when the size and the SHA-256 match the descriptor does the file move
into ``blobs/``; a mismatch deletes the partial file and fails the pull, and the store is as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import requests

from ggufpack.errors import GGUFPackError
from ggufpack.oci.descriptor import Descriptor
from ggufpack.progress import Bar
from ggufpack.registry.client import RegistryClient
from ggufpack.store import Store
from ggufpack.store.layout import digest_hex
from ggufpack.store.locking import locked

#: bytes per read from the socket; a cut connection loses at most the read in progress
_CHUNK = 256 * 1024
_HASH_BLOCK = 8 * 1024 * 1024


def _partial_path(store: Store, digest: str) -> Path:
    directory = store.root / "state" / "downloads"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{digest_hex(digest)}.partial"


def _hash_prefix(path: Path, size: int) -> hashlib._Hash:
    h = hashlib.sha256()
    with path.open("rb") as f:
        left = size
        while left:
            block = f.read(min(_HASH_BLOCK, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h


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
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > blob.size:
            offset = 0
        if offset and offset == blob.size:  # all there (cut before it was stored): a range request would get 416
            digest, received = "sha256:" + _hash_prefix(partial, offset).hexdigest(), 0
            bar.update(offset)
        else:
            digest, received = _download(client, repository, blob, partial, offset, bar)
        if digest != blob.digest:
            partial.unlink(missing_ok=True)
            raise GGUFPackError(
                f"blob {blob.digest} from {client.registry}/{repository} failed verification (its bytes hash to "
                f"{digest}); nothing was stored. The registry's copy is corrupt or was tampered with."
            )
        store.adopt_blob(partial, blob.digest)
    return received


def _download(client: RegistryClient, repository: str, blob: Descriptor, partial: Path, offset: int,
              bar: Bar) -> tuple[str, int]:
    """Fetch from ``offset`` to the end into ``partial``; (digest of the whole file, bytes received)."""
    h = _hash_prefix(partial, offset) if offset else hashlib.sha256()
    resp = client.get_blob(repository, blob.digest, offset)
    with resp:
        if offset and resp.status_code == 200:  # the range was ignored: start over
            offset, h = 0, hashlib.sha256()
        bar.update(offset)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            received = offset
            try:
                for chunk in resp.iter_content(_CHUNK):
                    received += len(chunk)
                    if received > blob.size:
                        break
                    h.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    bar.update(len(chunk))
            except requests.exceptions.RequestException:
                pass  # a cut connection: reported below as a short read, resumable
        finally:
            os.close(fd)
    if received != blob.size:
        if received > blob.size:
            partial.unlink(missing_ok=True)
        raise GGUFPackError(
            f"blob {blob.digest[:19]} from {client.registry}/{repository}: got {received} of {blob.size} bytes; "
            "run the pull again to resume"
        )
    return "sha256:" + h.hexdigest(), received - offset
