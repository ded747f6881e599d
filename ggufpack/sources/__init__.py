"""Where ADD and COPY get their bytes: the build context, HTTP(S) URLs and git repositories."""

from __future__ import annotations

from ggufpack.sources.context import (
    ContextEntry,
    ContextMatch,
    FileHashCache,
    hash_file,
    resolve_context_sources,
    walk_tree,
)
from ggufpack.sources.git import GitResult, clone, is_git_source, resolve_remote_ref
from ggufpack.sources.http import DownloadResult, download, is_url, parse_checksum
from ggufpack.sources.ignore import IgnoreRules

__all__ = [
    "ContextEntry",
    "ContextMatch",
    "DownloadResult",
    "FileHashCache",
    "GitResult",
    "IgnoreRules",
    "clone",
    "download",
    "hash_file",
    "is_git_source",
    "is_url",
    "parse_checksum",
    "resolve_context_sources",
    "resolve_remote_ref",
    "walk_tree",
]
