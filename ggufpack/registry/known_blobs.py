"""Which repositories of a registry hold a blob, as far as this store has seen (pushes and pulls).

A push consults it to mount a blob from a sibling repository instead of sending it again: a 7 GB
layer pushed as ``models/llama:q4`` is free to push as ``team/llama:q4`` on the same registry.
The file is advisory: a stale entry only costs a declined mount, after which the blob is uploaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ggufpack.errors import GGUFPackError
from ggufpack.store import Store
from ggufpack.store.layout import state_path
from ggufpack.util.fsutil import atomic_write, ensure_store_dir, read_small_file
from ggufpack.util.locking import locked

#: repositories remembered per blob (the newest win)
_KEEP = 8
#: a bigger file is not ours (about 100,000 blobs fit): it is read as empty, and rewritten by the next add
_MAX_FILE = 16 << 20


def read_advisory_json(path: Path, limit: int) -> Any:
    """The JSON in a state file of ours that only speeds things up, or None when it is missing, not a regular
    file (a FIFO or a link planted in a shared store), larger than ``limit`` bytes, or not JSON."""
    try:
        return json.loads(read_small_file(path, limit))  # one open: no check-then-open window
    except (OSError, GGUFPackError, ValueError, RecursionError):
        return None


class KnownBlobs:
    def __init__(self, store: Store) -> None:
        self.root = store.root
        self.directory = store.layout.state_dir("known-blobs")

    def _path(self, registry: str) -> Path:
        return self.directory / (hashlib.sha256(registry.encode()).hexdigest()[:32] + ".json")

    def _read(self, path: Path) -> dict[str, list[str]]:
        """digest → repositories; entries of any other shape are dropped (the file is advisory)."""
        data = read_advisory_json(path, _MAX_FILE)
        if not isinstance(data, dict):
            return {}
        return {digest: [r for r in repos if isinstance(r, str)] for digest, repos in data.items()
                if isinstance(repos, list)}

    def repositories(self, registry: str, digest: str) -> list[str]:
        return list(self._read(self._path(registry)).get(digest, []))

    def add(self, registry: str, repository: str, digest: str) -> None:
        path = self._path(registry)
        ensure_store_dir(self.root, state_path("known-blobs"))  # never through a planted symlink
        with locked(path.with_suffix(".lock")):
            data = self._read(path)
            repos = [r for r in data.get(digest, []) if r != repository]
            data[digest] = [repository, *repos][:_KEEP]
            atomic_write(path, json.dumps(data, sort_keys=True).encode(), self.directory)
