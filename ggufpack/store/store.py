"""The local store: an OCI image layout plus runnable files, safe under concurrent processes.

Rules every writer follows (and this class enforces where it can):
- content goes through ``ingest/`` and appears by rename only once complete and fsynced;
- ``index.json`` is rewritten whole (temp + fsync + rename) under the store lock;
- a ref is set only when its manifest blob (and listed files) already exist;
- a build holds :meth:`Store.lease` from its first write to its last ``set_ref`` so that ``prune``
  cannot collect blobs it has written but not yet named;
- a server holds :meth:`Store.hold` on the image it serves for as long as it runs, so that neither
  ``remove`` nor ``prune`` takes its files away.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.oci.descriptor import Descriptor, canonical_json
from ggufpack.refs import canonical_reference, parse_reference
from ggufpack.store import gc, leases, usage
from ggufpack.store.index import (
    ImageRecord,
    check_rfc3339,
    entry_for,
    entry_ref,
    malformed_entries,
    now_rfc3339,
    read_index,
    records,
)
from ggufpack.store.ingest import ContentMismatchError, IngestWriter, verify_content
from ggufpack.store.layout import Layout, default_root
from ggufpack.store.resolve import find
from ggufpack.util.fsutil import atomic_write, fsync_dir
from ggufpack.util.locking import locked

_HASH_CHUNK = 8 << 20


class Store:
    """A store directory; opening one creates its layout when missing."""

    def __init__(self, root: Path) -> None:
        self.layout = Layout(Path(root))
        self.layout.ensure()

    @classmethod
    def open_default(cls) -> Store:
        """The store at ``$GGUFPACK_HOME`` (or the XDG data directory)."""
        return cls(default_root())

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def cache_dir(self) -> Path:
        """Directory reserved for build-cache records."""
        return self.layout.cache

    # -- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.layout.blob(digest)

    def has_blob(self, digest: str) -> bool:
        return self.layout.blob(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.layout.blob(digest).read_bytes()
        except FileNotFoundError:
            raise GGUFPackError(
                f"blob {digest} is missing from the store {self.root}; pull or rebuild the image"
            ) from None

    def read_json(self, digest: str) -> Any:
        try:
            return json.loads(self.read_blob(digest))
        except (ValueError, RecursionError) as exc:
            raise GGUFPackError(f"blob {digest} in {self.root} is not JSON: {exc}") from exc

    @contextmanager
    def blob_writer(self) -> Iterator[IngestWriter]:
        """A writer for one blob; call ``commit()`` inside the ``with``, else nothing is kept."""
        writer = IngestWriter(self.layout.ingest, self.layout.blobs)
        try:
            yield writer
        finally:
            writer.abort()

    def adopt_blob(self, path: Path, digest: str, size: int) -> None:
        """Move a finished download into the blobs once it is checked here to be ``size`` bytes hashing to
        ``digest`` (:class:`ContentMismatchError` otherwise, and the file is removed: the only other way
        into ``blobs/`` than an :class:`IngestWriter`, verified the same way).

        Same filesystem only (the caller keeps partial downloads under the store root); the file
        is made read-only and durable before it appears under its digest.
        """
        target = self.layout.blob(digest)
        if target.exists():
            Path(path).unlink(missing_ok=True)
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise GGUFPackError(f"cannot store {path}: not a regular file")
            try:
                verify_content(*_hash_fd(fd), digest, size)
            except ContentMismatchError:
                Path(path).unlink(missing_ok=True)
                raise
            os.fsync(fd)
            os.fchmod(fd, 0o444)
        finally:
            os.close(fd)
        os.rename(path, target)
        fsync_dir(self.layout.blobs)

    def put_bytes(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        """Store ``data`` as a blob; returns ``(digest, size)``."""
        with self.blob_writer() as writer:
            writer.write(data)
            return writer.commit(expected_digest)

    def put_json(self, obj: Any) -> tuple[str, int, bytes]:
        """Store ``obj`` as canonical JSON; returns ``(digest, size, the bytes)``."""
        data = canonical_json(obj)
        digest, size = self.put_bytes(data)
        return digest, size, data

    # -- runnable files --------------------------------------------------------------------------

    def file_path(self, digest: str) -> Path:
        return self.layout.file(digest)

    def has_file(self, digest: str) -> bool:
        return self.layout.file(digest).is_file()

    def import_file(self, path: Path, *, move: bool) -> str:
        """Put a file under ``files/`` by content; returns its digest.

        With ``move`` the source is renamed in (same filesystem) or copied then deleted; the caller
        must not change it meanwhile. Without, it is copied (sharing extents where possible).
        """
        path = Path(path)
        if not path.is_file():
            raise GGUFPackError(f"cannot import {path}: not a regular file")
        if move:
            moved = self._move_file(path)
            if moved is not None:
                return moved
        writer = IngestWriter(self.layout.ingest, self.layout.files)
        try:
            writer.write_from_file(path)
            digest, _ = writer.commit()
        finally:
            writer.abort()
        if move:
            path.unlink()
        return digest

    def _move_file(self, path: Path) -> str | None:
        """Rename ``path`` into ``files/``; None when it lies on another filesystem."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            digest, _ = _hash_fd(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        target = self.layout.file(digest)
        if target.exists():
            path.unlink()
            return digest
        os.chmod(path, 0o444)
        try:
            os.rename(path, target)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return None
            raise
        fsync_dir(self.layout.files)
        fsync_dir(path.parent)
        return digest

    def file_from_blob(
        self, blob_digest: str, offset: int = 0, length: int | None = None, expected_digest: str | None = None
    ) -> str:
        """Make a runnable file from a byte range of a blob (a GGUF inside a tar layer); returns its
        digest. A whole blob (a ModelPack raw layer) becomes a hard link: same bytes, one inode.
        Otherwise extents are shared when the filesystem can and the tar data is block aligned.
        """
        source = self.layout.blob(blob_digest)
        if not source.is_file():
            raise GGUFPackError(
                f"blob {blob_digest} is missing from the store {self.root}; pull the image again"
            )
        whole = offset == 0 and length in (None, source.stat().st_size)
        if whole and expected_digest in (None, blob_digest) and self._link_blob(blob_digest):
            return blob_digest
        writer = IngestWriter(self.layout.ingest, self.layout.files)
        try:
            writer.write_from_file(source, offset, length)
            digest, _ = writer.commit(expected_digest, length)
        finally:
            writer.abort()
        return digest

    def blob_from_file(self, digest: str) -> None:
        """Make a runnable file also a blob (a ModelPack raw layer is the file itself): a hard link
        where the filesystem allows, else a copy that shares extents where it can (its digest checked
        again). ``files/`` holds only content that was verified on its way in, under that digest."""
        if self.has_blob(digest):
            return
        source = self.layout.file(digest)
        try:
            os.link(source, self.layout.blob(digest))
            fsync_dir(self.layout.blobs)
            return
        except FileExistsError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP):
                raise
        writer = IngestWriter(self.layout.ingest, self.layout.blobs)
        try:
            writer.write_from_file(source)
            writer.commit(digest)
        finally:
            writer.abort()

    def _link_blob(self, digest: str) -> bool:
        target = self.layout.file(digest)
        if target.exists():
            return True
        try:
            os.link(self.layout.blob(digest), target)
        except FileExistsError:
            return True
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP):
                return False
            raise
        fsync_dir(self.layout.files)
        return True

    # -- refs ------------------------------------------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Keep ``prune`` away for the ``with`` body: hold it from a build's first blob write until
        its refs (and cache records) are set. Several leases may be held at once."""
        with locked(self.layout.gc_lock, exclusive=False):
            yield

    def hold(self, record: ImageRecord, files: Iterable[str] = (), lease_id: str | None = None) -> leases.Lease:
        """A lease on ``record``'s image and ``files`` (see :mod:`~ggufpack.store.leases`): ``prune`` keeps
        them while this process, or one that inherited the lease's ``fd``, runs. Take it inside
        :meth:`lease`, from resolving the image on."""
        return leases.take(self.layout, record, tuple(files), lease_id)

    def held_images(self, images: list[ImageRecord] | None = None) -> list[ImageRecord]:
        """Images that no ref (of ``images``, default the store's) names any more but a running server
        holds: ``list`` shows them as ``<none>``."""
        named = {record.descriptor.digest for record in (self.images() if images is None else images)}
        return [r for r in leases.held_images(self.layout) if r.descriptor.digest not in named]

    def set_ref(
        self, ref: str, descriptor: Descriptor, created: str | None = None, files: Iterable[str] = ()
    ) -> str:
        """Point ``ref`` at the manifest ``descriptor`` (replacing what it named); returns the
        canonical ref. ``created`` defaults to now; ``files`` are runnable files of the image,
        kept as long as the ref exists. Everything named must already be in the store."""
        name = canonical_reference(ref)
        created = check_rfc3339(created) if created is not None else now_rfc3339()
        files = tuple(files)
        self._check_present(descriptor, files)
        entry = entry_for(name, descriptor, created, files)
        with locked(self.layout.lock):
            index = read_index(self.layout.index)
            manifests = index["manifests"]
            positions = [i for i, e in enumerate(manifests) if entry_ref(e) == name]
            if positions:
                manifests[positions[0]] = entry
                for i in reversed(positions[1:]):
                    del manifests[i]
            else:
                manifests.append(entry)
            self._write_index(index)
        return name

    def _check_present(self, descriptor: Descriptor, files: tuple[str, ...]) -> None:
        path = self.layout.blob(descriptor.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise GGUFPackError(
                f"cannot set a ref to {descriptor.digest}: the manifest blob is not in the store "
                "(commit blobs before naming them)"
            ) from None
        if size != descriptor.size:
            raise GGUFPackError(
                f"descriptor for {descriptor.digest} says {descriptor.size} bytes but the blob has {size}"
            )
        missing = [f for f in files if not self.has_file(f)]
        if missing:
            raise GGUFPackError(f"cannot set a ref naming files not in the store: {', '.join(missing)}")

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write(self.layout.index, canonical_json(index), self.layout.ingest)

    def images(self) -> list[ImageRecord]:
        """Every image in the store, one record per manifest, in index order."""
        return records(read_index(self.layout.index))

    def malformed_entries(self) -> list[str]:
        """What is wrong with each ``index.json`` entry :meth:`images` leaves out (a damaged or hostile store)."""
        return malformed_entries(read_index(self.layout.index))

    def resolve(self, ref_or_id: str) -> ImageRecord:
        """The image named by a ref (default tag latest), ``sha256:<hex>`` or an ID prefix (>= 4); by ID,
        also an image a running server holds after its last ref was removed."""
        images = self.images()
        try:
            return find(images, ref_or_id).record
        except UsageError:
            held = self.held_images(images)
            if not held:
                raise
        return find(images + held, ref_or_id).record

    def tag(self, source: str, target: str) -> str:
        """Give the image ``source`` names the extra ref ``target``; returns the canonical target."""
        name = canonical_reference(target)
        with locked(self.layout.lock):
            index = read_index(self.layout.index)
            record = find(records(index), source).record
            entry = entry_for(name, record.descriptor, record.created, record.files)
            manifests = [e for e in index["manifests"] if entry_ref(e) != name]
            index["manifests"] = [*manifests, entry]
            self._write_index(index)
        return name

    def remove(self, ref_or_id: str, *, force: bool = False) -> list[str]:
        """Remove one ref, or by ID every ref of that image; returns the refs removed. The blobs
        stay until ``prune``. As Docker's ``rmi``, an ID whose image refs of more than one repository
        name is refused without ``force`` (each ref can be removed by name)."""
        with locked(self.layout.lock):
            index = read_index(self.layout.index)
            match = find(records(index), ref_or_id)
            if match.ref is not None:
                keep = [e for e in index["manifests"] if entry_ref(e) != match.ref]
            else:
                _check_single_repository(match.record, ref_or_id, force)
                keep = [e for e in index["manifests"]
                        if not isinstance(e, dict) or e.get("digest") != match.record.descriptor.digest]
            removed = [r for e in index["manifests"] if e not in keep and (r := entry_ref(e))]
            index["manifests"] = keep
            self._write_index(index)
        return removed

    # -- space -----------------------------------------------------------------------------------

    def prune(self, extra_roots: Iterable[str] = ()) -> gc.PruneResult:
        """Delete what no ref nor ``extra_roots`` (blob or file digests) reaches; see :mod:`gc`."""
        return gc.prune(self.layout, extra_roots)

    def disk_usage(self, digests: Iterable[str]) -> int:
        """Allocated bytes of these blobs and files, hard links counted once."""
        return usage.digests_usage(self.layout, digests)

    def total_disk_usage(self) -> int:
        """Allocated bytes of the whole store directory."""
        return usage.total_usage(self.layout)


def _check_single_repository(record: ImageRecord, text: str, force: bool) -> None:
    """Docker's rule for ``rmi <ID>``: refs of one repository go together, refs of several need ``-f``."""
    repositories = {parse_reference(ref).name for ref in record.refs}
    if len(repositories) > 1 and not force:
        raise UsageError(
            f"conflict: unable to delete {text} (must be forced) - image is referenced in multiple repositories: "
            f"{', '.join(record.refs)}; remove the refs by name, or all of them with -f"
        )


def _hash_fd(fd: int) -> tuple[str, int]:
    """The digest and the size of what ``fd`` holds."""
    hasher = hashlib.sha256()
    position = 0
    while chunk := os.pread(fd, _HASH_CHUNK, position):
        hasher.update(chunk)
        position += len(chunk)
    return "sha256:" + hasher.hexdigest(), position
