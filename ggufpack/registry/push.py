"""``push``: a stored image to a registry, sending each blob at most once and resuming cut uploads.

For every blob, in order of preference: the repository already has it (HEAD) → nothing; another
repository of the same registry has it (we remember where we pushed or pulled each blob) → a
cross-repository mount, no bytes; else a chunked upload. Each chunk that the registry acknowledges
is recorded (upload URL and offset) under the store's ``state/uploads/``, so after a dropped
connection or a killed process the next ``push`` asks the registry how far the upload got and sends
only the rest.

A registry can only resume from a chunk boundary it acknowledged: CNCF distribution (Docker's
registry, Harbor) keeps the partial bytes of a cut request and then refuses the session, so a
cut in the middle of a chunk costs the blob a fresh upload (logged), unless a request-buffering
proxy (nginx's default) sits in front, which drops the partial chunk. A ``stop`` request (the CLI's
SIGINT/SIGTERM handler) therefore lets the chunk in flight finish and stops there, so that the
next push really resumes. Blobs go up several at a time; manifests go last, children before the index, so a
tag never names something the registry does not have.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ggufpack.errors import GGUFPackError, Interrupted, printable
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.reader import ImageManifest, parse_index
from ggufpack.progress import QUIET, Bar, Progress
from ggufpack.refs import Reference
from ggufpack.registry.client import RegistryClient, RegistryError, manifest_document
from ggufpack.registry.known_blobs import KnownBlobs, read_advisory_json
from ggufpack.store import Store
from ggufpack.store.layout import state_path
from ggufpack.util.fsutil import atomic_write, ensure_store_dir, store_dir
from ggufpack.util.locking import locked

#: bytes per PATCH: what a resumed push may have to send again at most
CHUNK_SIZE = 64 * 1024 * 1024
#: blobs uploaded at once
JOBS = 4
_READ_SIZE = 1024 * 1024
_UPLOADS = state_path("uploads")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class PushStats:
    sent: int = 0  # blobs uploaded (fully or the rest of a resumed upload)
    skipped: int = 0  # already in the repository
    mounted: int = 0  # linked from another repository
    resumed: int = 0  # uploads continued from an earlier push
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


@dataclass(frozen=True)
class PushResult:
    reference: str  # registry/repository:tag as pushed
    digest: str  # of the top manifest (or index)
    stats: PushStats


class _FileSlice:
    """``length`` bytes of a file from ``offset``, as a sized body for ``requests``.

    Only ``read`` and ``__len__``: with ``tell`` or ``__iter__`` requests would fall back to chunked
    transfer encoding, which registries reject next to a Content-Range.
    """

    def __init__(self, path: Path, offset: int, length: int, bar: Bar, stats: PushStats) -> None:
        self._file = path.open("rb")
        self._file.seek(offset)
        self._left = length
        self._length = length
        self._bar, self._stats = bar, stats

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        # http.client asks for 8 KiB at a time; hand it 1 MiB, which it sends just as well.
        data = self._file.read(min(self._left, max(size, _READ_SIZE)))
        self._left -= len(data)
        self._bar.update(len(data))
        self._stats.add(bytes_sent=len(data))
        if not data:
            self._file.close()
        return data

    def close(self) -> None:
        self._file.close()


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an http(s) URL, the default port spelled out; None when it is not one."""
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _on_registry(client: RegistryClient, location: str) -> bool:
    """Is ``location`` (absolute, or relative to the registry) on the registry's own origin?"""
    try:
        resolved = client.url(location)
    except ValueError:
        return False
    origin = _origin(client.base)
    return origin is not None and _origin(resolved) == origin


class _UploadState:
    """Where an unfinished upload of one blob to one repository stands, kept across runs."""

    def __init__(self, store: Store, registry: str, repository: str, digest: str) -> None:
        key = hashlib.sha256(f"{registry}/{repository}@{digest}".encode()).hexdigest()
        self.path = store.root / _UPLOADS / f"{key}.json"
        self._root = store.root

    def load(self, client: RegistryClient, warn: Callable[[str], None]) -> str | None:
        """The saved upload URL; None when there is none or the file is not ours (it is only a resume hint).

        The resume file is store state, which others may write: a ``location`` that is not on the
        registry's own origin (scheme, host and port) would send the blob's bytes to any host, so such a
        resume point is dropped (with a ``warn``ing) and the upload starts afresh."""
        state = read_advisory_json(self.path, 64 * 1024)
        location = state.get("location") if isinstance(state, dict) else None
        if not isinstance(location, str):
            return None
        if not _on_registry(client, location):
            warn(f"  ignoring the saved upload point in {self.path}: it is not on {client.registry} "
                 f"({printable(location.split('?', 1)[0], 120)!r}); starting a fresh upload")
            self.clear()
            return None
        return location

    def lock(self) -> AbstractContextManager[bool]:
        ensure_store_dir(self._root, _UPLOADS)
        return locked(self.path.with_suffix(".lock"))

    def save(self, location: str, offset: int) -> None:
        """Replace the resume point atomically (a full disk leaves the previous one, and no temp file)."""
        directory = ensure_store_dir(self._root, _UPLOADS)
        atomic_write(self.path, json.dumps({"location": location, "offset": offset}).encode(), directory)

    def clear(self) -> None:
        if store_dir(self._root, _UPLOADS) is not None:
            self.path.unlink(missing_ok=True)


def image_blobs(store: Store, top: Descriptor) -> tuple[list[Descriptor], list[tuple[Descriptor, bytes]]]:
    """The blobs (configs and layers) and the manifests (children first, ``top`` last) of an image, each
    manifest checked as a pulled one is (a damaged store is an error naming it, never a traceback)."""
    blobs: dict[str, Descriptor] = {}
    manifests: list[tuple[Descriptor, bytes]] = []

    def visit(descriptor: Descriptor) -> None:
        data = store.read_blob(descriptor.digest)
        name = f"stored manifest {descriptor.digest}"
        manifest = manifest_document(data, name)
        if "manifests" in manifest:
            for child in parse_index(manifest, name):
                visit(child)
        else:
            for blob in ImageManifest.parse(manifest, name).blobs:
                blobs.setdefault(blob.digest, blob)
        manifests.append((descriptor, data))

    visit(top)
    return list(blobs.values()), manifests


class Pusher:
    """One push of one image to one repository."""

    def __init__(self, store: Store, client: RegistryClient, repository: str, progress: Progress = QUIET,
                 chunk_size: int = CHUNK_SIZE, jobs: int = JOBS) -> None:
        self.store, self.client, self.repository = store, client, repository
        self.progress, self.chunk_size, self.jobs = progress, chunk_size, jobs
        self.known = KnownBlobs(store)
        self.stats = PushStats()
        self.stop = threading.Event()  # set by a signal handler: stop at the next chunk boundary

    def push_blob(self, blob: Descriptor, bar: Bar) -> None:
        digest = blob.digest
        if self._already_there(blob, bar):
            return
        for source in self.known.repositories(self.client.registry, digest):
            if source != self.repository and self._try_mount(digest, source):
                self.stats.add(mounted=1)
                bar.update(blob.size)
                self.known.add(self.client.registry, self.repository, digest)
                return
        state = _UploadState(self.store, self.client.registry, self.repository, digest)
        # Another push of this blob to this repository (same store) would PATCH the same saved session at the
        # same offsets, and one of them would fail: the second waits, then finds the blob there.
        with state.lock():
            if self._already_there(blob, bar):
                state.clear()
                return
            self._upload(blob, bar, state)
        self.known.add(self.client.registry, self.repository, digest)

    def _already_there(self, blob: Descriptor, bar: Bar) -> bool:
        if self.client.blob_size(self.repository, blob.digest) != blob.size:
            return False
        self.stats.add(skipped=1)
        bar.update(blob.size)
        self.known.add(self.client.registry, self.repository, blob.digest)
        return True

    def _try_mount(self, digest: str, source: str) -> bool:
        try:
            return self.client.mount_blob(self.repository, digest, source)
        except RegistryError as e:
            if e.status in (401, 403, 404):
                return False  # no access to the source repository: upload instead
            raise

    def _upload(self, blob: Descriptor, bar: Bar, state: _UploadState) -> None:
        path = self.store.blob_path(blob.digest)
        location, offset = state.load(self.client, self.progress.log), 0
        if location is not None:
            try:
                known = self.client.upload_offset(location)
            except RegistryError:
                known = None
            if known is None or known > blob.size:
                self.progress.log(f"  the registry could not resume the upload of {blob.digest[:19]}; "
                                  "sending it again")
                location = None
            else:
                offset = known
                self.stats.add(resumed=1)
                bar.update(offset)
        if location is None:
            location = self.client.start_upload(self.repository)
        while offset < blob.size:
            if self.stop.is_set():
                raise Interrupted(f"push interrupted at {offset} of {blob.size} bytes of {blob.digest[:19]}; "
                                  "run it again to resume")
            length = min(self.chunk_size, blob.size - offset)
            start = offset

            def body(start: int = start, length: int = length) -> _FileSlice:
                return _FileSlice(path, start, length, bar, self.stats)

            location = self.client.upload_chunk(location, body, offset, length)
            offset += length
            state.save(location, offset)
        self.client.finish_upload(location, blob.digest)
        state.clear()
        self.stats.add(sent=1)

    def push(self, top: Descriptor, tag: str | None) -> str:
        blobs, manifests = image_blobs(self.store, top)
        total = sum(b.size for b in blobs)
        self.progress.log(f"pushing {len(blobs)} blob(s), {total} bytes, to {self.client.registry}/{self.repository}")
        with self.progress.bar(f"push {self.repository}", total) as bar, ThreadPoolExecutor(self.jobs) as pool:
            for future in [pool.submit(self.push_blob, blob, bar) for blob in blobs]:
                future.result()
        for descriptor, data in manifests:
            reference = tag if descriptor is top and tag else descriptor.digest
            self.client.put_manifest(self.repository, reference, data, descriptor.media_type)
        return top.digest


def push_image(
    store: Store, source: str, target: Reference, client: RegistryClient, progress: Progress = QUIET,
    chunk_size: int = CHUNK_SIZE, jobs: int = JOBS, stop: threading.Event | None = None, fmt: str = "image",
) -> PushResult:
    """Push the stored image ``source`` (ref or ID) as ``target`` (a registry reference).

    ``fmt="modelpack"`` pushes the image's CNCF ModelPack artifact instead (made in the store first).
    Setting ``stop`` makes the push end at the next chunk boundary with :class:`Interrupted`.
    """
    if target.registry is None:
        raise GGUFPackError(f"{target} names no registry: write REGISTRY/NAME[:TAG], e.g. localhost:5000/{target}")
    with store.lease():
        descriptor = store.resolve(source).descriptor
        if fmt == "modelpack":
            from ggufpack.formats.modelpack import export_modelpack

            descriptor = export_modelpack(store, source)
        elif fmt != "image":
            raise GGUFPackError(f"unknown push format {fmt!r}: image or modelpack")
        if target.digest and target.digest != descriptor.digest:
            raise GGUFPackError(f"{target} names digest {target.digest}, but {source} is {descriptor.digest}")
        pusher = Pusher(store, client, target.repository, progress, chunk_size, jobs)
        if stop is not None:
            pusher.stop = stop
        digest = pusher.push(descriptor, target.tag)
    shown = f"{target.name}:{target.tag}" if target.tag else f"{target.name}@{digest}"
    return PushResult(shown, digest, pusher.stats)

