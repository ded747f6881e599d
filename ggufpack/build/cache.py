"""The content-addressed build cache.

An op's key is the SHA-256 of its kind, its expanded arguments, the key of the state it runs on
and the digests of what it reads (context files by content, files of other stages, pulled bases).
A record maps the key to what the op produced: the nodes it wrote and the layer that holds them.
A record is used only while every blob and file it names is still in the store.

Layer records (``layers/<hex>.json``) say which nodes a layer blob holds, so an image's filesystem
can be rebuilt from its manifest without reading its tars again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..oci.descriptor import Descriptor, canonical_json
from ..store import Store
from ..store.fsutil import atomic_write
from .snapshot import Diff, FileNode

CACHE_FORMAT = 1


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
        return cls(
            Descriptor.from_json(obj["descriptor"]), obj["diff_id"],
            {path: FileNode.from_json(node) for path, node in obj["nodes"].items()},
        )


class BuildCache:
    """Op records and layer records kept beside the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ops_dir = store.cache_dir / "ops"
        self.layers_dir = store.cache_dir / "layers"
        self.ops_dir.mkdir(parents=True, exist_ok=True)
        self.layers_dir.mkdir(parents=True, exist_ok=True)

    def _complete(self, result: LayerResult) -> bool:
        store = self.store
        return store.has_blob(result.descriptor.digest) and all(store.has_file(d) for d in result.file_digests())

    @staticmethod
    def _read(path: Path) -> LayerResult | None:
        """A record file as a result; None when missing or damaged (a damaged record is a miss)."""
        try:
            return LayerResult.from_json(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _usable(self, path: Path) -> LayerResult | None:
        result = self._read(path)
        return result if result is not None and self._complete(result) else None

    def lookup(self, key: str) -> LayerResult | None:
        """The recorded result of op ``key``, if it and everything it names are still there."""
        return self._usable(self.ops_dir / f"{key}.json")

    def record(self, key: str, result: LayerResult) -> None:
        """Remember an op's result (after its blobs and files are committed)."""
        data = canonical_json(result.to_json())
        atomic_write(self.ops_dir / f"{key}.json", data, self.store.layout.ingest)
        self.record_layer(result)

    def record_layer(self, result: LayerResult) -> None:
        path = self.layers_dir / f"{result.descriptor.hex}.json"
        if not path.exists():
            atomic_write(path, canonical_json(result.to_json()), self.store.layout.ingest)

    def layer(self, digest: str) -> LayerResult | None:
        """What a layer blob holds, if a record of it exists and its files are in the store."""
        return self._usable(self.layers_dir / f"{digest.split(':', 1)[1]}.json")

    def roots(self) -> Iterator[str]:
        """Every blob and file digest an op record names (kept by ``prune`` unless the cache is dropped)."""
        for path in self.ops_dir.glob("*.json"):
            result = self._read(path)
            if result is None:
                continue
            yield result.descriptor.digest
            yield from result.file_digests()

    def clear(self) -> int:
        """Drop every op record; returns how many were dropped."""
        count = 0
        for path in self.ops_dir.glob("*.json"):
            path.unlink(missing_ok=True)
            count += 1
        return count
