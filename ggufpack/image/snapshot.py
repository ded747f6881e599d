"""A stage's filesystem as the build sees it: paths → nodes whose content lives in the store.

The build never materializes a root filesystem. A file node names its content by digest
(``store.files/sha256/<hex>``), so copying a multi-GB GGUF between stages is a dictionary update,
and a layer is the set of nodes one instruction wrote.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import GGUFPackError
from ..oci.reader import parse_digest
from ..oci.symlinks import UnsafeSymlinkError, check_tree

DIR_MODE = 0o755
FILE_MODE = 0o644
_KINDS = ("file", "dir", "symlink")


@dataclass(frozen=True)
class FileNode:
    """One entry of a stage's filesystem."""

    kind: str  # "file" | "dir" | "symlink"
    mode: int
    uid: int = 0
    gid: int = 0
    digest: str | None = None  # content digest of a file (``sha256:<hex>``)
    size: int = 0
    linkname: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "mode": self.mode, "uid": self.uid, "gid": self.gid}
        if self.digest is not None:
            out["digest"] = self.digest
            out["size"] = self.size
        if self.linkname is not None:
            out["linkname"] = self.linkname
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FileNode:
        """A node from a record of the store (a shared store may hold anything): checked."""
        def whole(key: str, upper: int) -> int:
            value = obj.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < upper:
                raise GGUFPackError(f"file node field {key} is {value!r:.40}, not an integer below {upper}")
            return value

        kind, digest, linkname = obj.get("kind"), obj.get("digest"), obj.get("linkname")
        if kind not in _KINDS or (kind == "symlink") != isinstance(linkname, str):
            raise GGUFPackError(f"malformed file node {dict(obj)!r:.120}")
        return cls(kind=kind, mode=whole("mode", 0o10000), uid=whole("uid", 1 << 32), gid=whole("gid", 1 << 32),
                   digest=None if digest is None else parse_digest(digest, "file node digest"),
                   size=whole("size", 1 << 63), linkname=linkname)

    def owned(self, uid: int | None, gid: int | None, mode: int | None) -> FileNode:
        """This node with ``--chown``/``--chmod`` applied (None keeps the value)."""
        return replace(
            self, uid=self.uid if uid is None else uid, gid=self.gid if gid is None else gid,
            mode=self.mode if mode is None else mode,
        )


def clean_path(path: str) -> str:
    """An image path relative to the root, with ``..`` unable to climb above it ('' is the root)."""
    cleaned = posixpath.normpath("/" + path.replace("\\", "/")).lstrip("/")
    return "" if cleaned == "." else cleaned


def parents_of(path: str) -> Iterator[str]:
    """The ancestors of ``a/b/c``: ``a``, ``a/b``."""
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


Diff = dict[str, FileNode]


class Snapshot:
    """An immutable mapping of cleaned paths to nodes; ``apply`` returns a new snapshot."""

    def __init__(self, nodes: Mapping[str, FileNode] | None = None) -> None:
        self._nodes: dict[str, FileNode] = dict(nodes or {})

    def __contains__(self, path: str) -> bool:
        return path in self._nodes

    def get(self, path: str) -> FileNode | None:
        return self._nodes.get(path)

    def items(self) -> Iterable[tuple[str, FileNode]]:
        return self._nodes.items()

    def is_dir(self, path: str) -> bool:
        if path == "":
            return True
        node = self._nodes.get(path)
        return node is not None and node.kind == "dir"

    def below(self, path: str) -> Iterator[tuple[str, FileNode]]:
        """Every node strictly under directory ``path``, as (relative path, node), sorted."""
        prefix = f"{path}/" if path else ""
        for name in sorted(self._nodes):
            if name.startswith(prefix) and name != path:
                yield name[len(prefix) :], self._nodes[name]

    def check_writable(self, path: str) -> None:
        """Refuse to write through a symlink or over a file used as a directory."""
        for parent in parents_of(path):
            node = self._nodes.get(parent)
            if node is None:
                continue
            if node.kind == "symlink":
                raise GGUFPackError(f"cannot write /{path}: /{parent} is a symlink in the image")
            if node.kind != "dir":
                raise GGUFPackError(f"cannot write /{path}: /{parent} is a file, not a directory")

    def apply(self, diff: Diff) -> Snapshot:
        nodes = dict(self._nodes)
        for path, node in diff.items():
            old = nodes.get(path)
            if old is not None and old.kind == "dir" and node.kind != "dir":
                # A file replacing a directory hides what was below it, as an overlay would.
                for child in [p for p in nodes if p.startswith(path + "/")]:
                    del nodes[child]
            nodes[path] = node
        return Snapshot(nodes)

    def to_json(self) -> dict[str, Any]:
        return {path: node.to_json() for path, node in sorted(self._nodes.items())}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Snapshot:
        return cls({path: FileNode.from_json(node) for path, node in obj.items()})

    def lookup(self, path: str) -> tuple[str, str | None] | None:
        """``(kind, symlink target)`` of ``path``, for :mod:`ggufpack.oci.symlinks`."""
        node = self._nodes.get(path)
        return None if node is None else (node.kind, node.linkname)


def check_symlinks(snapshot: Snapshot, where: str) -> None:
    """Refuse a tree holding a symlink that resolves outside it (the rule of :mod:`ggufpack.oci.symlinks`)."""
    links = {path: node.linkname or "" for path, node in snapshot.items() if node.kind == "symlink"}
    if links:
        try:
            check_tree(links, snapshot.lookup)
        except UnsafeSymlinkError as exc:
            raise UnsafeSymlinkError(f"{where}: {exc}") from None


def with_parents(diff: Diff, snapshot: Snapshot) -> Diff:
    """Add the directories a diff needs that the snapshot lacks, root-owned and 0755, as Docker does."""
    out = dict(diff)
    for path in list(diff):
        snapshot.check_writable(path)
        for parent in parents_of(path):
            if parent not in out and not snapshot.is_dir(parent):
                out[parent] = FileNode("dir", DIR_MODE)
    return out
