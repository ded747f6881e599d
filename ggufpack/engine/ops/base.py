"""What every layer-making op gets to work with, and the placement rules ADD/COPY/CAT share."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import GGUFPackError
from ...image.snapshot import Diff, FileNode, Snapshot, clean_path
from ...plan.graph import SourceRef
from ...progress import Progress
from ...sources.context import FileHashCache
from ...store import Store


@dataclass
class OpContext:
    """The state an op runs on and the services it may use."""

    store: Store
    context_dir: Path
    hash_cache: FileHashCache
    snapshot: Snapshot
    #: the filesystem of a stage or image named by --from (a context ref is handled by the op)
    read_source: Callable[[SourceRef], Snapshot]
    progress: Progress
    #: a private scratch directory on the store's filesystem (so results can be renamed in)
    workdir: Path
    #: the llama.cpp backend QUANTIZE and IMATRIX use (None: in-process llama-cpp-python)
    backend: str | None = None


@dataclass(frozen=True)
class Item:
    """One thing to place: a name relative to the destination and the nodes under it."""

    name: str
    node: FileNode
    children: tuple[tuple[str, FileNode], ...] = ()


def place(items: list[Item], dest: str, snapshot: Snapshot, *, many: bool, keyword: str) -> Diff:
    """Docker's destination rules: several sources need a directory destination ending in ``/``;
    a single file goes to ``dest`` itself unless ``dest`` ends in ``/`` or is a directory; a
    directory's contents go into ``dest``."""
    target = clean_path(dest)
    dest_is_dir = dest.endswith("/") or dest.endswith("/.") or snapshot.is_dir(target) or target == ""
    if many and not dest_is_dir:
        raise GGUFPackError(
            f"{keyword} with several sources needs a directory destination ending in '/': write {dest}/"
        )
    diff: Diff = {}
    for item in items:
        if item.node.kind == "dir":
            base = posixpath.join(target, item.name) if item.name else target
            if base:
                diff[base] = item.node
            for rel, node in item.children:
                diff[posixpath.join(base, rel) if base else rel] = node
            continue
        path = posixpath.join(target, item.name) if dest_is_dir else target
        if not path:
            raise GGUFPackError(f"{keyword}: cannot write a file over the image root; give a file name")
        diff[path] = item.node
    return diff


def apply_ownership(diff: Diff, chown: str | None, chmod: str | None) -> Diff:
    """``--chown=uid[:gid]`` (``root`` is 0) and ``--chmod=<octal>`` on everything an op writes."""
    uid = gid = None
    if chown is not None:
        user, _, group = chown.partition(":")
        uid = 0 if user == "root" else int(user)
        gid = uid if not group else (0 if group == "root" else int(group))
    mode = int(chmod, 8) if chmod is not None else None
    if uid is None and mode is None:
        return diff
    return {path: node.owned(uid, gid, mode) for path, node in diff.items()}
