"""COPY (and ADD of context paths): select sources from the context or another filesystem, place
them by Docker's rules."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from ...errors import GGUFPackError, shown
from ...image.snapshot import FILE_MODE, Diff, FileNode, Snapshot, clean_path
from ...oci.symlinks import UnsafeSymlinkError, check_symlink
from ...packerfile.instructions import AddCommand, CopyCommand, InlineContent
from ...sources.context import ContextEntry, resolve_context_sources
from ...sources.ignore import IgnoreRules, compile_pattern, has_magic
from .base import Item, OpContext, apply_ownership, place


def _context_symlink(entry: ContextEntry, root: Path) -> FileNode:
    """A symlink of the context (or of a git checkout, ``root``) is kept as a link only when its target
    stays inside that tree: relative, and resolved from where it lies, never above ``root``."""
    target = entry.link_target or ""
    real_root = os.path.realpath(root)
    where = os.path.relpath(os.path.realpath(entry.path.parent), real_root).replace(os.sep, "/")
    try:
        if where == ".." or where.startswith("../"):
            raise UnsafeSymlinkError(where)
        check_symlink(posixpath.normpath(posixpath.join(where, entry.path.name)), target)
        if os.path.commonpath([os.path.realpath(entry.path), real_root]) != real_root:
            raise UnsafeSymlinkError(target)  # through other symlinks of the tree
    except UnsafeSymlinkError:
        problem = "an absolute target" if target.startswith("/") else f"its target leaves {root}"
        raise GGUFPackError(
            f"{entry.path} is a symlink to {shown(target)}: {problem}, and an image keeps only symlinks that are "
            "relative and stay inside the tree they are copied from; replace it with what it points to, or "
            "leave it out (.ggufpackerignore, --exclude)"
        ) from None
    return FileNode("symlink", 0o777, linkname=target)


def _context_node(ctx: OpContext, entry: ContextEntry, *, import_content: bool, root: Path | None = None) -> FileNode:
    """The node of a context entry (``root``: the tree it comes from, by default the build context)."""
    if entry.kind == "dir":
        return FileNode("dir", entry.mode)
    if entry.kind == "symlink":
        return _context_symlink(entry, ctx.context_dir if root is None else root)
    digest = "sha256:" + ctx.hash_cache.digest(entry.path)
    if import_content and not ctx.store.has_file(digest):
        imported = ctx.store.import_file(entry.path, move=False)
        if imported != digest:
            raise GGUFPackError(f"{entry.path} changed while it was being added; build again")
    return FileNode("file", entry.mode, digest=digest, size=entry.size)


def context_items(
    ctx: OpContext, sources: list[str], excludes: list[str], *, parents: bool, import_content: bool
) -> list[Item]:
    """Context sources as items; content digests come from the hash cache (cheap when unchanged)."""
    matches = resolve_context_sources(ctx.context_dir, sources, excludes=excludes)
    items: list[Item] = []
    for match in matches:
        node = _context_node(ctx, match, import_content=import_content)
        if match.kind == "dir":
            children = tuple(
                (child.relpath, _context_node(ctx, child, import_content=import_content))
                for child in match.contents
            )
            items.append(Item(match.relpath if parents else "", node, children))
        else:
            items.append(Item(match.relpath if parents else posixpath.basename(match.relpath), node))
    return items


def _select(snapshot: Snapshot, pattern: str) -> list[str]:
    path = clean_path(pattern)
    if not has_magic(path):
        if path != "" and snapshot.get(path) is None:
            raise GGUFPackError(f"{pattern} does not exist in the source filesystem")
        return [path]
    try:
        regex = compile_pattern(path)
    except ValueError as exc:
        raise GGUFPackError(f"bad pattern {pattern!r}: {exc}") from None
    found = sorted(p for p, _ in snapshot.items() if regex.match(p))
    if not found:
        raise GGUFPackError(f"{pattern} matches nothing in the source filesystem")
    return found


def snapshot_items(
    snapshot: Snapshot, sources: list[str], excludes: list[str], *, parents: bool
) -> list[Item]:
    """Sources selected from a stage's or image's filesystem."""
    rules = IgnoreRules.from_patterns(excludes, source="--exclude") if excludes else None
    items: list[Item] = []
    for pattern in sources:
        for path in _select(snapshot, pattern):
            if rules is not None and rules.is_excluded(path):
                continue
            node = snapshot.get(path) if path else FileNode("dir", 0o755)
            assert node is not None
            if node.kind == "dir":
                children = tuple(
                    (rel, child) for rel, child in snapshot.below(path)
                    if rules is None or not rules.is_excluded(posixpath.join(path, rel) if path else rel)
                )
                items.append(Item(path if parents else "", node, children))
            else:
                items.append(Item(path if parents else posixpath.basename(path), node))
    return items


def inline_items(ctx: OpContext, contents: tuple[InlineContent, ...], *, import_content: bool) -> list[Item]:
    """Heredoc files (``COPY <<EOF dest``): each named by its delimiter."""
    items = []
    for content in contents:
        data = content.data.encode("utf-8")
        items.append(Item(content.name, write_bytes_node(ctx, data, import_content=import_content)))
    return items


def write_bytes_node(ctx: OpContext, data: bytes, *, import_content: bool, mode: int = FILE_MODE) -> FileNode:
    """A file node for inline bytes, stored in the store's files when ``import_content``."""
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if import_content and not ctx.store.has_file(digest):
        temp = ctx.workdir / f"inline-{digest[7:19]}"
        temp.write_bytes(data)
        ctx.store.import_file(temp, move=True)
    return FileNode("file", mode, digest=digest, size=len(data))


def copy_diff(
    ctx: OpContext, command: AddCommand | CopyCommand, source_snapshot: Snapshot | None, *, import_content: bool,
    sources: list[str] | None = None,
) -> Diff:
    """The nodes COPY writes; ``source_snapshot`` is the --from filesystem (None: the context).

    With ``import_content=False`` nothing is written: the diff names content by digest only, which
    is exactly what the cache key needs. ``sources`` narrows the command's sources (ADD passes its
    context paths only).
    """
    paths = list(command.sources) if sources is None else sources
    parents = isinstance(command, CopyCommand) and command.parents
    if source_snapshot is None:
        items = context_items(
            ctx, paths, list(command.excludes), parents=parents, import_content=import_content,
        ) if paths else []
    else:
        items = snapshot_items(source_snapshot, paths, list(command.excludes), parents=parents)
    items += inline_items(ctx, command.contents, import_content=import_content)
    many = len(command.sources) + len(command.contents) > 1 or any(has_magic(s) for s in paths)
    diff = place(items, command.dest, ctx.snapshot, many=many, keyword=command.keyword)
    check_placed_symlinks(diff, command.keyword)
    return apply_ownership(diff, command.chown, command.chmod)


def check_placed_symlinks(diff: Diff, keyword: str) -> None:
    """Refuse a symlink that, where the op puts it, would point outside the image (the rule every
    layer must pass, see :mod:`ggufpack.oci.symlinks`), before anything is written."""
    for path, node in sorted(diff.items()):
        if node.kind == "symlink":
            try:
                check_symlink(path, node.linkname or "")
            except UnsafeSymlinkError as exc:
                raise GGUFPackError(f"{keyword}: placed there, {exc}; an image keeps only symlinks that "
                                    "stay inside it") from None


def diff_inputs(diff: Diff) -> dict[str, Any]:
    """What a diff depends on, for a cache key: every path with its node (content by digest)."""
    return {path: node.to_json() for path, node in sorted(diff.items())}
