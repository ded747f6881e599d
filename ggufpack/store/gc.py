"""Garbage collection: keep what refs (and the build cache) reach, delete the rest.

Prune holds the GC lock exclusively; builds hold it shared (``Store.lease``) from their first blob
write to their last ref update, so prune never deletes a blob a running build just committed but
has not named yet. Prune also holds the index lock, so refs cannot move while it decides. What a
running server holds a lease on (``leases.py``) is kept too, whether or not a ref still names it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ggufpack.errors import GGUFPackError
from ggufpack.oci import mediatypes as mt
from ggufpack.store import leases
from ggufpack.store.index import read_index, records
from ggufpack.store.layout import Layout, digest_hex
from ggufpack.util.fsutil import is_real_dir, read_small_file
from ggufpack.util.locking import locked, try_lock

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: the blobs whose descriptors are followed: manifests and indexes, OCI and Docker
_FOLLOWED_TYPES = frozenset(mt.MANIFEST_TYPES)
# A root of unknown type (from the build cache) is read as JSON only when this small.
_SNIFF_LIMIT = 4 << 20
# No manifest or index ggufpack builds or pulls comes near this (registries cap them at 4 MiB).
_MANIFEST_LIMIT = 64 << 20


@dataclass(frozen=True)
class PruneResult:
    """What prune deleted; ``bytes_freed`` counts disk blocks whose last link went away."""

    blobs_removed: int
    files_removed: int
    bytes_freed: int
    temps_removed: int = 0
    #: images kept only because a running server holds a lease on them (no ref names them any more)
    images_held: int = 0


def _children(layout: Layout, digest: str, media_type: str | None) -> list[dict]:
    """Descriptors a manifest or index blob points at; nothing for other blobs."""
    if media_type is not None and media_type not in _FOLLOWED_TYPES:
        return []
    path = layout.blobs / digest_hex(digest)
    try:
        doc = json.loads(read_small_file(path, _SNIFF_LIMIT if media_type is None else _MANIFEST_LIMIT))
    except (OSError, ValueError, RecursionError, GGUFPackError):  # not a manifest we could have written
        return []
    if not isinstance(doc, dict):
        return []
    found = [doc["config"]] if isinstance(doc.get("config"), dict) else []
    for key in ("layers", "manifests"):
        found += [d for d in doc.get(key) or [] if isinstance(d, dict)]
    return [d for d in found if isinstance(d.get("digest"), str)]


def reachable(layout: Layout, roots: Iterable[tuple[str, str | None]]) -> set[str]:
    """Every digest reachable from ``(digest, media_type)`` roots through manifests and indexes."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        digest, media_type = stack.pop()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            digest_hex(digest)
        except GGUFPackError:
            continue
        stack += [(d["digest"], d.get("mediaType")) for d in _children(layout, digest, media_type)]
    return seen


def _index_roots(layout: Layout) -> Iterator[tuple[str, str | None]]:
    for record in records(read_index(layout.index)):  # malformed entries name nothing
        yield record.descriptor.digest, record.descriptor.media_type
        for file_digest in record.files:
            yield file_digest, "file"


class _Remover:
    """Unlinks paths and works out how many bytes that really freed (hard links counted once)."""

    def __init__(self) -> None:
        self._inodes: dict[tuple[int, int], list[int]] = {}  # -> [links removed, nlink, bytes]

    def remove(self, path: Path, fd: int | None = None) -> None:
        st = os.fstat(fd) if fd is not None else path.lstat()
        path.unlink()
        key = (st.st_dev, st.st_ino)
        if key in self._inodes:
            self._inodes[key][0] += 1
        else:
            self._inodes[key] = [1, st.st_nlink, st.st_blocks * 512]

    @property
    def bytes_freed(self) -> int:
        return sum(size for removed, nlink, size in self._inodes.values() if removed >= nlink)


def _remove_unreachable(directory: Path, keep: set[str], remover: _Remover) -> int:
    removed = 0
    for path in directory.iterdir():
        if _HEX64.fullmatch(path.name) and f"sha256:{path.name}" not in keep and not is_real_dir(path):
            remover.remove(path)
            removed += 1
    return removed


def _remove_stale_temps(ingest: Path, remover: _Remover) -> int:
    """Delete temps whose writer is gone (its flock released with it)."""
    removed = 0
    if not is_real_dir(ingest):
        return 0
    for path in ingest.iterdir():
        try:
            # never blocks on a FIFO; a symlink (ELOOP) is no temp of ours and is only unlinked
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError:
            if path.is_symlink():
                remover.remove(path)
                removed += 1
            continue
        try:
            if try_lock(fd):
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    shutil.rmtree(path, ignore_errors=True)  # a killed build's scratch directory
                else:
                    remover.remove(path, fd)
                removed += 1
        finally:
            os.close(fd)
    return removed


def _remove_stale_state(layout: Layout, remover: _Remover) -> int:
    """Leftovers of interrupted pulls and imports under ``state/``: partial downloads, lock files and
    the import scratch directories of earlier versions (imports stage nothing today). Prune holds the
    GC lock exclusively, so no pull, push or build that could own them is running. Upload resume points
    stay: they are tiny and a later push uses them."""
    removed = 0
    if not is_real_dir(layout.state):
        return 0
    leftovers = [path for name, pattern in (("downloads", "*"), ("uploads", "*.lock"), ("imports", "*"))
                 if is_real_dir(layout.state_dir(name)) for path in layout.state_dir(name).glob(pattern)]
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                remover.remove(path)
            except FileNotFoundError:
                continue
        removed += 1
    return removed


def prune(layout: Layout, extra_roots: Iterable[str] = ()) -> PruneResult:
    """Remove blobs and files no ref, no running server's lease nor ``extra_roots`` reaches, stale
    ingest temps, the leases of servers that are gone, and what interrupted pulls and imports left
    under ``state/``.

    ``extra_roots`` is iterated only once both locks are held, so a generator reading the build
    cache's records sees them as they are at deletion time.
    """
    with locked(layout.gc_lock, blocking=False) as held:
        if not held:
            raise GGUFPackError(
                f"a build or another prune is using the store {layout.root}; run prune again when it ends"
            )
        with locked(layout.lock):
            roots = list(_index_roots(layout))
            named = {digest for digest, _ in roots}
            held = list(leases.held_roots(layout))
            images_held = len({d for d, kind in held if kind != "file" and d not in named})
            roots += held + [(d, None) for d in extra_roots]
            keep = reachable(layout, roots)
            remover = _Remover()
            blobs = _remove_unreachable(layout.blobs, keep, remover)
            files = _remove_unreachable(layout.files, keep, remover)
            temps = _remove_stale_temps(layout.ingest, remover)
            temps += _remove_stale_state(layout, remover)
    return PruneResult(blobs, files, remover.bytes_freed, temps, images_held)
