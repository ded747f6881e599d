"""Which repositories of a registry hold a blob, as far as this store has seen (pushes and pulls).

A push consults it to mount a blob from a sibling repository instead of sending it again: a 7 GB
layer pushed as ``models/llama:q4`` is free to push as ``team/llama:q4`` on the same registry.
The file is advisory: a stale entry only costs a declined mount, after which the blob is uploaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ggufpack.store import Store
from ggufpack.store.fsutil import atomic_write
from ggufpack.store.locking import locked

#: repositories remembered per blob (the newest win)
_KEEP = 8


class KnownBlobs:
    def __init__(self, store: Store) -> None:
        self.directory = store.root / "state" / "known-blobs"

    def _path(self, registry: str) -> Path:
        return self.directory / (hashlib.sha256(registry.encode()).hexdigest()[:32] + ".json")

    def _read(self, path: Path) -> dict[str, list[str]]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def repositories(self, registry: str, digest: str) -> list[str]:
        return list(self._read(self._path(registry)).get(digest, []))

    def add(self, registry: str, repository: str, digest: str) -> None:
        path = self._path(registry)
        self.directory.mkdir(parents=True, exist_ok=True)
        with locked(path.with_suffix(".lock")):
            data = self._read(path)
            repos = [r for r in data.get(digest, []) if r != repository]
            data[digest] = [repository, *repos][:_KEEP]
            atomic_write(path, json.dumps(data, sort_keys=True).encode(), self.directory)
