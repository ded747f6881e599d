"""Where things live in a store directory, and creating the OCI image layout on first use.

```
<root>/oci-layout            {"imageLayoutVersion":"1.0.0"}
<root>/index.json            refs, as org.opencontainers.image.ref.name annotations
<root>/blobs/sha256/<hex>    OCI blobs (layers, configs, manifests)
<root>/files/sha256/<hex>    plain extracted files (a GGUF llama.cpp loads in place)
<root>/ingest/               temp files being written (each flocked by its writer)
<root>/cache/                build-cache records (owned by the build cache)
<root>/state/<name>/         state of one owner each (names in STATE_NAMES): partial downloads
                             (downloads/), upload resume points (uploads/), blobs known to be in a
                             registry (known-blobs/), detached servers and split-model links (run/),
                             sideloaded backends (backends/), the leases of running servers
                             (leases/, see leases.py); imports/ is the import scratch of earlier
                             versions, which only prune still removes
<root>/lock                  flock: index.json updates and prune
<root>/gc.lock               flock: shared by builds (leases), exclusive for prune
```
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ggufpack.errors import GGUFPackError
from ggufpack.oci.descriptor import canonical_json
from ggufpack.util.fsutil import atomic_write, read_small_file
from ggufpack.util.locking import locked

LAYOUT_VERSION = "1.0.0"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def default_root() -> Path:
    """``$GGUFPACK_HOME``, else ``$XDG_DATA_HOME/ggufpack``, else ``~/.local/share/ggufpack``."""
    home = os.environ.get("GGUFPACK_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "ggufpack"
    return Path.home() / ".local" / "share" / "ggufpack"


#: the directories under ``<root>/state/``
STATE_NAMES = frozenset({"downloads", "uploads", "known-blobs", "run", "backends", "leases", "imports"})


def state_path(name: str, *below: str) -> str:
    """``state/<name>[/below...]``, relative to the store root: the form :func:`~ggufpack.util.fsutil.store_dir`
    and :func:`~ggufpack.util.fsutil.ensure_store_dir` walk without following symlinks."""
    if name not in STATE_NAMES:
        raise ValueError(f"the store layout has no state directory {name!r}")
    return "/".join(("state", name, *below))


def digest_hex(digest: str) -> str:
    """The hex of a ``sha256:<hex>`` digest; anything else is refused (it would name a path)."""
    match = _DIGEST.fullmatch(digest)
    if not match:
        raise GGUFPackError(f"unsupported or malformed digest {digest!r}: expected sha256:<64 hex digits>")
    return match.group(1)


@dataclass(frozen=True)
class Layout:
    """The paths of one store directory."""

    root: Path

    @property
    def oci_layout(self) -> Path:
        return self.root / "oci-layout"

    @property
    def index(self) -> Path:
        return self.root / "index.json"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def files(self) -> Path:
        return self.root / "files" / "sha256"

    @property
    def ingest(self) -> Path:
        return self.root / "ingest"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def state_dir(self, name: str) -> Path:
        """``<root>/state/<name>`` (one of :data:`STATE_NAMES`); not created here."""
        return self.root / state_path(name)

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def gc_lock(self) -> Path:
        return self.root / "gc.lock"

    def blob(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def file(self, digest: str) -> Path:
        return self.files / digest_hex(digest)

    def ensure(self) -> None:
        """Create the directories and, once, ``oci-layout`` and an empty ``index.json``."""
        try:
            for directory in (self.blobs, self.files, self.ingest, self.cache):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GGUFPackError(
                f"cannot create the store at {self.root}: {exc.strerror}; "
                "set GGUFPACK_HOME to a writable directory"
            ) from exc
        if self.oci_layout.exists() and self.index.exists():
            self._check_version()
            return
        with locked(self.lock):
            if not self.oci_layout.exists():
                layout = canonical_json({"imageLayoutVersion": LAYOUT_VERSION})
                atomic_write(self.oci_layout, layout, self.ingest)
            if not self.index.exists():
                empty = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
                atomic_write(self.index, canonical_json(empty), self.ingest)
        self._check_version()

    def _check_version(self) -> None:
        try:
            version = json.loads(read_small_file(self.oci_layout, 64 << 10)).get("imageLayoutVersion")
        except (OSError, ValueError, AttributeError, RecursionError, GGUFPackError) as exc:
            raise GGUFPackError(f"{self.oci_layout} is unreadable or not JSON: {exc}") from exc
        if version != LAYOUT_VERSION:
            raise GGUFPackError(
                f"{self.root} holds an OCI layout of version {version!r}; ggufpack only reads "
                f"{LAYOUT_VERSION}: point GGUFPACK_HOME elsewhere"
            )
