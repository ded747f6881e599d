"""Real disk usage: allocated blocks, each inode once (a blob hard-linked as a file costs once).

Extents shared by reflink cannot be seen this way and are counted per file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ggufpack.store.layout import Layout


def paths_usage(paths: Iterable[Path]) -> int:
    """Allocated bytes of ``paths`` (missing ones count 0), each (device, inode) once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def digests_usage(layout: Layout, digests: Iterable[str]) -> int:
    """Allocated bytes of the blobs and files named by ``digests``."""
    return paths_usage(p for d in digests for p in (layout.blob(d), layout.file(d)))


def total_usage(layout: Layout) -> int:
    """Allocated bytes of every regular file in the store directory."""
    return paths_usage(p for p in layout.root.rglob("*") if p.is_file() and not p.is_symlink())
