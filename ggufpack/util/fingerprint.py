"""A fingerprint of code: what a cache key holds so that a change to the code that made a result
invalidates it (CONVERT's layers are keyed on the converter's sources, not on a version number)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def source_fingerprint(root: Path, distributions: Iterable[str] = ()) -> str:
    """The sha256 of the sorted relative paths and bytes of the ``.py`` files under ``root``, and of
    the installed versions of ``distributions`` (``"absent"`` for one not installed)."""
    from importlib import metadata  # about 18 ms to import: only when a fingerprint is asked for

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    for name in sorted(distributions):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"dist\0{name}\0{version}\0".encode())
    return f"sha256:{digest.hexdigest()}"
