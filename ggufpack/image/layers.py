"""Layer records: which files a layer blob holds, so an image's filesystem is known without its tars.

A record (``cache/layers/<hex>.json``) is written when a layer is built or pulled and read whenever
an image is opened (``FROM``, ``COPY --from``, ``run``, exports). Records are read back from a store
others may write (a shared store, an unpacked archive): only as bounded regular files (never through
a symlink, never a FIFO or device), only from a real directory of the store, and a damaged record
reads as missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GGUFPackError
from ..oci.descriptor import Descriptor, canonical_json
from ..oci.reader import parse_descriptor, parse_digest
from ..store import Store
from ..util.fsutil import atomic_write, ensure_store_dir, read_small_file, store_dir
from .snapshot import Diff, FileNode, clean_path

#: a record lists the nodes of one layer (a few hundred bytes each); a bigger file is no record of ours
RECORD_LIMIT = 64 << 20
LAYERS_DIR = "cache/layers"


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


class RecordFiles:
    """Records of :class:`LayerResult` kept as JSON files in one directory of the store."""

    def __init__(self, store: Store, relative: str) -> None:
        self.store = store
        self.relative = relative

    @property
    def directory(self) -> Path:
        return self.store.root / self.relative

    def complete(self, result: LayerResult) -> bool:
        """Whether the layer blob and every file the record names are still in the store."""
        store = self.store
        return store.has_blob(result.descriptor.digest) and all(store.has_file(d) for d in result.file_digests())

    @staticmethod
    def read(path: Path) -> LayerResult | None:
        """A record file as a result; None when missing or damaged (a damaged record is a miss)."""
        try:
            return LayerResult.from_json(json.loads(read_small_file(path, RECORD_LIMIT)))
        except (OSError, ValueError, KeyError, TypeError, RecursionError, GGUFPackError):
            return None

    def usable(self, name: str) -> LayerResult | None:
        """Record ``name``, if it is there, undamaged and complete."""
        directory = store_dir(self.store.root, self.relative)
        result = None if directory is None else self.read(directory / f"{name}.json")
        return result if result is not None and self.complete(result) else None

    def write(self, name: str, result: LayerResult) -> None:
        path = ensure_store_dir(self.store.root, self.relative) / f"{name}.json"
        atomic_write(path, canonical_json(result.to_json()), self.store.layout.ingest)


class LayerRecords(RecordFiles):
    """What each layer blob of the store holds."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, LAYERS_DIR)

    def record(self, result: LayerResult) -> None:
        if not (self.directory / f"{result.descriptor.hex}.json").exists():
            self.write(result.descriptor.hex, result)

    def layer(self, digest: str) -> LayerResult | None:
        """What a layer blob holds, if a record of it exists and its files are in the store."""
        return self.usable(digest.split(":", 1)[1])
