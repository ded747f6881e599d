"""The content-addressed op cache of the build engine.

An op's key is the SHA-256 of its kind, its expanded arguments, the key of the state it runs on
and the digests of what it reads (context files by content, files of other stages, pulled bases).
A record (``cache/ops/<key>.json``) maps the key to what the op produced: the nodes it wrote and the
layer that holds them, in the format of :mod:`ggufpack.image.layers`. A record is used only while
every blob and file it names is still in the store.

Records are read back from a store others may write: see :class:`~ggufpack.image.layers.RecordFiles`;
nothing is written or deleted through a symlinked directory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..image.layers import LayerRecords, LayerResult, RecordFiles
from ..oci.descriptor import canonical_json
from ..store import Store
from ..util.fsutil import store_dir

CACHE_FORMAT = 1
_OPS = "cache/ops"


def cache_key(parts: dict[str, Any]) -> str:
    """The hex SHA-256 of a canonical JSON description of an op and its inputs."""
    return hashlib.sha256(canonical_json({"format": CACHE_FORMAT, **parts})).hexdigest()


class BuildCache:
    """Op records, beside the store's layer records."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ops = RecordFiles(store, _OPS)
        self.layers = LayerRecords(store)

    def lookup(self, key: str) -> LayerResult | None:
        """The recorded result of op ``key``, if it and everything it names are still there."""
        return self.ops.usable(key)

    def record(self, key: str, result: LayerResult) -> None:
        """Remember an op's result (after its blobs and files are committed)."""
        self.ops.write(key, result)
        self.layers.record(result)

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
            result = self.ops.read(path)
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
