"""The content-addressed build cache.

An op's key is the SHA-256 of its kind, its expanded arguments, the key of the state it runs on
and the digests of what it reads (context files by content, files of other stages, pulled bases).
A record maps the key to what the op produced: the nodes it wrote and the layer that holds them.
A record is used only while every blob and file it names is still in the store.

Layer records (``layers/<hex>.json``) say which nodes a layer blob holds, so an image's filesystem
can be rebuilt from its manifest without reading its tars again.

Records are read back from a store others may write (a shared store, an unpacked archive): a
record is read only as a bounded regular file (never through a symlink, never a FIFO or device),
only from ``cache/ops`` and ``cache/layers`` when those are real directories of the store, and
nothing is written or deleted through a symlinked directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GGUFPackError
from ..oci.descriptor import Descriptor, canonical_json
from ..oci.reader import parse_descriptor, parse_digest
from ..store import Store
from ..store.fsutil import atomic_write, ensure_store_dir, read_small_file, store_dir
from .snapshot import Diff, FileNode, clean_path

CACHE_FORMAT = 1
#: a record lists the nodes of one layer (a few hundred bytes each); a bigger file is no record of ours
RECORD_LIMIT = 64 << 20
_OPS, _LAYERS = "cache/ops", "cache/layers"


def cache_key(parts: dict[str, Any]) -> str:
    """The hex SHA-256 of a canonical JSON description of an op and its inputs."""
    return hashlib.sha256(canonical_json({"format": CACHE_FORMAT, **parts})).hexdigest()


@dataclass(frozen=True)
class LayerResult:
    """A layer one op produced: its blob descriptor, uncompressed digest and the nodes it holds."""

    descriptor: Descriptor
    diff_id: str
    diff: Diff

    def file_digests(self) -> set[str]:
        return {node.digest for node in self.diff.values() if node.digest}

    def to_json(self) -> dict[str, Any]:
        return {
            "descriptor": self.descriptor.to_json(), "diff_id": self.diff_id,
            "nodes": {path: node.to_json() for path, node in sorted(self.diff.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LayerResult:
        """A record read back (checked: a shared store may hold anything)."""
        nodes = obj["nodes"]
        if not isinstance(nodes, dict) or any(not p or clean_path(p) != p for p in nodes):
            raise GGUFPackError("a layer record names paths that are not clean image paths")
        return cls(
            parse_descriptor(obj["descriptor"], "layer record"), parse_digest(obj["diff_id"], "layer record diff_id"),
            {path: FileNode.from_json(node) for path, node in nodes.items()},
        )


class BuildCache:
    """Op records and layer records kept beside the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ops_dir = store.root / _OPS
        self.layers_dir = store.root / _LAYERS

    def _complete(self, result: LayerResult) -> bool:
        store = self.store
        return store.has_blob(result.descriptor.digest) and all(store.has_file(d) for d in result.file_digests())

    @staticmethod
    def _read(path: Path) -> LayerResult | None:
        """A record file as a result; None when missing or damaged (a damaged record is a miss)."""
        try:
            return LayerResult.from_json(json.loads(read_small_file(path, RECORD_LIMIT)))
        except (OSError, ValueError, KeyError, TypeError, RecursionError, GGUFPackError):
            return None

    def _usable(self, relative: str, name: str) -> LayerResult | None:
        directory = store_dir(self.store.root, relative)
        result = None if directory is None else self._read(directory / f"{name}.json")
        return result if result is not None and self._complete(result) else None

    def _write(self, relative: str, name: str, result: LayerResult) -> None:
        path = ensure_store_dir(self.store.root, relative) / f"{name}.json"
        atomic_write(path, canonical_json(result.to_json()), self.store.layout.ingest)

    def lookup(self, key: str) -> LayerResult | None:
        """The recorded result of op ``key``, if it and everything it names are still there."""
        return self._usable(_OPS, key)

    def record(self, key: str, result: LayerResult) -> None:
        """Remember an op's result (after its blobs and files are committed)."""
        self._write(_OPS, key, result)
        self.record_layer(result)

    def record_layer(self, result: LayerResult) -> None:
        if not (self.layers_dir / f"{result.descriptor.hex}.json").exists():
            self._write(_LAYERS, result.descriptor.hex, result)

    def layer(self, digest: str) -> LayerResult | None:
        """What a layer blob holds, if a record of it exists and its files are in the store."""
        return self._usable(_LAYERS, digest.split(":", 1)[1])

    def _op_records(self) -> Iterator[Path]:
        """The ``*.json`` regular files in ``cache/ops``: none when it is not a real directory of the store."""
        directory = store_dir(self.store.root, _OPS)
        for path in directory.glob("*.json") if directory is not None else ():
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    yield path
            except FileNotFoundError:
                continue

    def roots(self) -> Iterator[str]:
        """Every blob and file digest an op record names (kept by ``prune`` unless the cache is dropped)."""
        for path in self._op_records():
            result = self._read(path)
            if result is None:
                continue
            yield result.descriptor.digest
            yield from result.file_digests()

    def clear(self) -> int:
        """Drop every op record; returns how many were dropped. Only regular files inside the store's own
        ``cache/ops`` go: a symlinked directory (or a link in it) is never deleted through."""
        count = 0
        for path in self._op_records():
            path.unlink(missing_ok=True)
            count += 1
        return count
