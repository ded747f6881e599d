"""The file-writing ops: COPY, ADD (context, URL, git) and CAT.

Each op answers two questions: ``inputs()`` — what its result depends on, cheaply (digests, a
checksum, a remote commit), for the cache key — and ``run()`` — the nodes it writes, with their
content committed to the store.
"""

from __future__ import annotations

import posixpath
import shutil
from typing import Any

from ...errors import GGUFPackError
from ...image.snapshot import Diff, FileNode, Snapshot
from ...packerfile.instructions import AddCommand, CatCommand, CopyCommand
from ...sources import git, http
from ...sources.context import walk_tree
from .base import Item, OpContext, apply_ownership, place
from .copy import _context_node, check_placed_symlinks, copy_diff, diff_inputs, write_bytes_node

DOWNLOAD_MODE = 0o600  # Docker gives downloaded files 0600; --chmod changes it


class CopyOp:
    def __init__(self, ctx: OpContext, command: CopyCommand, source: Snapshot | None) -> None:
        self.ctx, self.command, self.source = ctx, command, source

    def inputs(self) -> dict[str, Any]:
        return {"diff": diff_inputs(copy_diff(self.ctx, self.command, self.source, import_content=False))}

    def run(self) -> Diff:
        return copy_diff(self.ctx, self.command, self.source, import_content=True)


class CatOp:
    def __init__(self, ctx: OpContext, command: CatCommand, source: Snapshot | None) -> None:
        self.ctx, self.command = ctx, command

    def _diff(self, import_content: bool) -> Diff:
        node = write_bytes_node(self.ctx, self.command.content.encode("utf-8"), import_content=import_content)
        diff = place([Item(posixpath.basename(self.command.dest), node)], self.command.dest, self.ctx.snapshot,
                     many=False, keyword="CAT")
        return apply_ownership(diff, self.command.chown, self.command.chmod)

    def inputs(self) -> dict[str, Any]:
        return {"diff": diff_inputs(self._diff(False))}

    def run(self) -> Diff:
        return self._diff(True)


class AddOp:
    """ADD of context paths, http(s) URLs (verified by --checksum) and git repositories."""

    def __init__(self, ctx: OpContext, command: AddCommand, source: Snapshot | None) -> None:
        self.ctx, self.command = ctx, command
        self.urls = [s for s in command.sources if http.is_url(s) and not git.is_git_source(s)]
        self.repos = [s for s in command.sources if git.is_git_source(s)]
        self.paths = [s for s in command.sources if s not in self.urls and s not in self.repos]
        if self.repos and len(command.sources) + len(command.contents) > 1:
            raise GGUFPackError("ADD of a git repository takes exactly one source")
        if command.keep_git_dir and not self.repos:
            raise GGUFPackError("--keep-git-dir applies only to a git repository source")
        self._downloads: dict[str, http.DownloadResult] = {}
        self._checkout: git.GitResult | None = None

    def _download(self, url: str) -> http.DownloadResult:
        if url not in self._downloads:
            target = self.ctx.workdir / f"download-{len(self._downloads)}"
            self._downloads[url] = http.download(url, target, checksum=self.command.checksum,
                                                 progress=self.ctx.progress)
        return self._downloads[url]

    def _clone(self) -> git.GitResult:
        if self._checkout is None:
            self._checkout = git.clone(self.repos[0], self.ctx.workdir / "git", keep_git_dir=self.command.keep_git_dir,
                                       progress=self.ctx.progress)
        return self._checkout

    def inputs(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        if self.paths or self.command.contents:
            parts["context"] = diff_inputs(
                copy_diff(self.ctx, self.command, None, import_content=False, sources=self.paths)
            )
        for url in self.urls:
            # A checksum names the content, so nothing needs fetching to know the key.
            parts[url] = self.command.checksum or f"sha256:{self._download(url).sha256}"
        for repo in self.repos:
            commit = git.resolve_remote_ref(repo) or self._clone().commit
            parts[repo] = {"commit": commit, "keep_git_dir": self.command.keep_git_dir}
        return parts

    def run(self) -> Diff:
        command = self.command
        diff: Diff = {}
        if self.paths or command.contents:
            diff.update(copy_diff(self.ctx, command, None, import_content=True, sources=self.paths))
        many = len(command.sources) + len(command.contents) > 1
        for url in self.urls:
            result = self._download(url)
            digest = self.ctx.store.import_file(result.path, move=True)
            node = FileNode("file", DOWNLOAD_MODE, digest=digest, size=result.size)
            diff.update(place([Item(result.path.name, node)], command.dest, self.ctx.snapshot, many=many,
                              keyword="ADD"))
        if self.repos:
            checkout = self._clone()
            children = tuple(
                (entry.relpath, _context_node(self.ctx, entry, import_content=True, root=checkout.path))
                for entry in walk_tree(checkout.path)
            )
            placed = place([Item("", FileNode("dir", 0o755), children)], command.dest, self.ctx.snapshot,
                           many=False, keyword="ADD")
            check_placed_symlinks(placed, "ADD")
            diff.update(placed)
            shutil.rmtree(checkout.path, ignore_errors=True)
        return apply_ownership(diff, command.chown, command.chmod)
