"""The build context: resolving ADD/COPY sources, listing trees, hashing files.

Rules, following Docker where it has one:

* A source is a path or glob relative to the context root. A leading ``/`` still means the context
  root; a ``..`` that would climb above the root is a usage error, never an escape.
* Files matched by the ignore file are invisible, as if absent. An ignored directory stays visible
  only through what an ``!`` exception re-includes below it.
* ``--exclude`` patterns (ignore-file syntax) are matched against each path relative to the context
  root and, inside a directory source, also relative to that directory, so both ``--exclude=*.md``
  next to ``COPY docs/ ...`` and ``--exclude=docs/*.md`` drop ``docs/a.md``.
* A source that is itself a symlink (also when a glob matched it) is followed; symlinks below a
  directory source are kept as symlinks. Following never leaves the context: a link whose target
  lies outside it is a usage error (Docker would re-root it, which hides mistakes).
* Sockets, FIFOs and device nodes are skipped: they have no place in an image layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ggufpack.errors import GGUFPackError, SourcePosition, UsageError, located
from ggufpack.progress import QUIET, Progress
from ggufpack.sources.ignore import IgnoreRules, clean_path, compile_pattern, has_magic
from ggufpack.util.fsutil import is_real_dir, read_small_file

EntryKind = Literal["file", "dir", "symlink"]

_READ_SIZE = 8 << 20
_MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class ContextEntry:
    """One file, directory or symlink found in the context.

    ``relpath`` is slash-separated and relative to the listing's root; ``path`` is absolute;
    ``mode`` holds the permission bits; ``size`` is the byte count of a file and 0 otherwise;
    ``link_target`` is the raw target of a symlink.
    """

    relpath: str
    path: Path
    kind: EntryKind
    mode: int
    size: int
    link_target: str | None = None


@dataclass(frozen=True)
class ContextMatch(ContextEntry):
    """A resolved ADD/COPY source.

    ``relpath`` is the source's own context path (a followed symlink keeps its name, while ``path``,
    ``kind``, ``mode`` and ``size`` describe the target). For a directory, ``contents`` lists every
    visible entry below it, pre-order, relative to the directory.
    """

    contents: tuple[ContextEntry, ...] = ()


def _entry(path: Path, relpath: str) -> ContextEntry | None:
    """Describe ``path`` without following it; ``None`` for special files."""
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ContextEntry(relpath, path, "symlink", mode, 0, os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ContextEntry(relpath, path, "dir", mode, 0)
    if stat.S_ISREG(st.st_mode):
        return ContextEntry(relpath, path, "file", mode, st.st_size)
    return None


def _join(base: str, name: str) -> str:
    return name if base in ("", ".") else f"{base}/{name}"


def walk_tree(root: Path, rules: IgnoreRules | None = None, *, rel_root: str = ".") -> Iterator[ContextEntry]:
    """List everything below ``root`` (not ``root`` itself), pre-order, siblings sorted by name.

    Symlinks are listed, never followed. ``rules`` are matched against ``rel_root/<relpath>``, so
    a subdirectory of the context can be walked with the context's rules by giving its context path.
    """
    yield from _walk(Path(root), "", clean_path(rel_root), rules or IgnoreRules([]))


def _walk(directory: Path, rel: str, rel_root: str, rules: IgnoreRules) -> Iterator[ContextEntry]:
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise GGUFPackError(f"cannot list {directory}: {exc.strerror}; check its permissions") from None
    for name in names:
        relpath = _join(rel, name)
        entry = _entry(directory / name, relpath)
        if entry is None:
            continue
        context_rel = _join(rel_root, relpath)
        excluded = rules.is_excluded(context_rel)
        if entry.kind != "dir":
            if not excluded:
                yield entry
        elif not excluded:
            yield entry
            yield from _walk(entry.path, relpath, rel_root, rules)
        elif rules.may_reinclude_below(context_rel):
            # Docker keeps an excluded directory only as the parent of what an exception re-includes.
            below = list(_walk(entry.path, relpath, rel_root, rules))
            if below:
                yield entry
                yield from below


def _source_relpath(source: str) -> str:
    """The context-relative form of a source as written; ``..`` above the root is refused."""
    if not source.strip():
        raise UsageError("empty ADD/COPY source")
    rel = clean_path(source.lstrip("/") or ".")
    if rel == ".." or rel.startswith("../"):
        raise UsageError(f"source {source!r} points outside the build context; "
                         "sources are paths inside the context directory")
    return rel


class _Resolver:
    """Follows symlinks inside one context root, refusing to leave it."""

    def __init__(self, context_dir: Path) -> None:
        self.given = Path(os.path.abspath(context_dir))
        self.root = self.given.resolve()

    def _relative_to_root(self, absolute: str) -> list[str] | None:
        normal = Path(os.path.normpath(absolute))
        for root in (self.root, self.given):
            if normal == root or root in normal.parents:
                return [] if normal == root else list(normal.relative_to(root).parts)
        return None

    def resolve(self, relpath: str, source: str) -> str:
        """Context path of ``relpath`` with every symlink along it followed."""
        pending = [] if relpath == "." else relpath.split("/")
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise self._escape(source)
                done.pop()
                continue
            candidate = self.root.joinpath(*done, part)
            if not candidate.is_symlink():
                done.append(part)
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise GGUFPackError(f"too many levels of symlinks resolving source {source!r}")
            target = os.readlink(candidate)
            if os.path.isabs(target):
                inside = self._relative_to_root(target)
                if inside is None:
                    raise self._escape(source)
                done = []
                pending = inside + pending
            else:
                pending = target.split("/") + pending
        return "/".join(done) or "."

    @staticmethod
    def _escape(source: str) -> UsageError:
        return UsageError(f"source {source!r} resolves outside the build context (through '..' "
                          "or a symlink); only files inside the context can be added")


def _visible(rules: IgnoreRules, root: Path, relpath: str, entry: ContextEntry) -> bool:
    if not rules.is_excluded(relpath):
        return True
    if entry.kind != "dir" or not rules.may_reinclude_below(relpath):
        return False
    return next(walk_tree(root / relpath, rules, rel_root=relpath), None) is not None


def _under(relpath: str, parents: Iterable[str]) -> bool:
    return any(p == "." or relpath.startswith(p + "/") for p in parents)


def resolve_context_sources(
    context_dir: Path,
    patterns: list[str],
    *,
    excludes: Iterable[str] = (),
    position_hint: SourcePosition | None = None,
) -> list[ContextMatch]:
    """Resolve ADD/COPY sources against the context, in source order, without duplicates.

    Raises :class:`UsageError` for a source that leaves the context or a malformed pattern, and
    :class:`GGUFPackError` for a source that matches nothing visible; each located at
    ``position_hint`` when given.
    """
    with located(position_hint):
        return _resolve_sources(context_dir, patterns, excludes)


def _resolve_sources(context_dir: Path, patterns: list[str], excludes: Iterable[str]) -> list[ContextMatch]:
    resolver = _Resolver(Path(context_dir))
    root = resolver.root
    if not root.is_dir():
        raise GGUFPackError(f"build context {context_dir} is not a directory")
    rules = IgnoreRules.load(root)
    exclude_rules = IgnoreRules.from_patterns(excludes, source="--exclude")
    matches: list[ContextMatch] = []
    seen: set[str] = set()
    for source in patterns:
        rel = _source_relpath(source)
        found = _glob(root, rel, rules, source) if has_magic(rel) else _lookup(resolver, rel, rules, source)
        found = [c for c in found if not exclude_rules.is_excluded(c)]
        if not found:
            raise GGUFPackError(_not_found_message(root, rel, rules, source))
        for relpath in found:
            if relpath not in seen:
                seen.add(relpath)
                matches.append(_match(resolver, rules, exclude_rules, relpath, source))
    return matches


def _glob(root: Path, rel: str, rules: IgnoreRules, source: str) -> list[str]:
    try:
        regex = compile_pattern(rel)
    except ValueError as exc:
        raise UsageError(f"bad source pattern {source!r}: {exc}") from None
    hits = [e.relpath for e in walk_tree(root, rules) if regex.match(e.relpath)]
    # "**" can match a directory and its contents; the directory already carries them.
    return [h for h in hits if not _under(h, hits)]


def _lookup(resolver: _Resolver, rel: str, rules: IgnoreRules, source: str) -> list[str]:
    resolver.resolve(rel, source)  # refuses a path that leaves the context via a symlink
    path = resolver.root / rel
    if not os.path.lexists(path):
        return []
    entry = _entry(path, rel)
    if entry is None or not _visible(rules, resolver.root, rel, entry):
        return []
    return [rel]


def _not_found_message(root: Path, rel: str, rules: IgnoreRules, source: str) -> str:
    message = f"source {source!r} matches no file in the build context {root}"
    if not has_magic(rel) and os.path.lexists(root / rel):
        return f"{message}: it is excluded by {rules.source or '--exclude'}; change that to add it"
    return f"{message}; check the path (sources are relative to the context directory)"


def _match(
    resolver: _Resolver, rules: IgnoreRules, excludes: IgnoreRules, relpath: str, source: str,
) -> ContextMatch:
    root = resolver.root
    target_rel = resolver.resolve(relpath, source)
    if target_rel != relpath:
        target = _entry(root / target_rel, target_rel) if os.path.lexists(root / target_rel) else None
        if target is None or not _visible(rules, root, target_rel, target):
            raise GGUFPackError(f"source {source!r} is a symlink to {target_rel!r}, which is missing, "
                                "ignored or not a regular file or directory")
    entry = _entry(root / target_rel, target_rel)
    assert entry is not None  # checked by _lookup/_glob or just above
    contents: tuple[ContextEntry, ...] = ()
    if entry.kind == "dir":
        contents = tuple(
            e for e in walk_tree(entry.path, rules, rel_root=target_rel)
            if not excludes.is_excluded(e.relpath) and not excludes.is_excluded(_join(relpath, e.relpath))
        )
    return ContextMatch(relpath, entry.path, entry.kind, entry.mode, entry.size, contents=contents)


def hash_file(path: Path, progress: Progress | None = None) -> str:
    """SHA-256 hex digest of a file, read in large blocks, with a progress bar when given one."""
    digest = hashlib.sha256()
    buffer = bytearray(_READ_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        total = os.fstat(f.fileno()).st_size
        with (progress or QUIET).bar(f"hashing {Path(path).name}", total) as bar:
            while n := f.readinto(buffer):
                digest.update(view[:n])
                bar.update(n)
    return digest.hexdigest()


class FileHashCache:
    """Remembers file digests across builds so unchanged multi-GB context files are not re-read.

    An entry is keyed by the absolute path and reused only while ``(st_dev, st_ino, st_size,
    st_mtime_ns, st_ctime_ns)`` is unchanged (ctime too, since tools can reset mtime but not
    ctime). Files under 1 MiB are cheaper to hash than to look up and are not stored. A file whose
    mtime is within two seconds of the hash start is not stored either: on filesystems with coarse
    timestamps it could still change without its stat changing. The cache is one JSON file in
    ``cache_dir``, replaced atomically; a damaged file is treated as empty.
    """

    FILE_NAME = "file-digests.json"
    #: a bigger file is not ours (some 50,000 entries fit): read as empty
    MAX_BYTES = 16 << 20
    MIN_SIZE = 1 << 20
    RACY_SECONDS = 2.0

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.file = self.cache_dir / self.FILE_NAME
        self._entries: dict[str, dict[str, int | str]] = self._read()

    def _read(self) -> dict[str, dict[str, int | str]]:
        try:  # bounded, and never a FIFO, a device or a symlink: the store may hold planted files
            data = json.loads(read_small_file(self.file, self.MAX_BYTES))
        except (OSError, ValueError, RecursionError, GGUFPackError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _key(st: os.stat_result) -> dict[str, int | str]:
        return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}

    def digest(self, path: Path, progress: Progress | None = None) -> str:
        """SHA-256 hex digest of ``path``, from the cache when the file is unchanged."""
        abspath = os.path.abspath(path)
        before = os.stat(abspath)
        key = self._key(before)
        cached = self._entries.get(abspath)
        if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()):
            return str(cached["sha256"])
        started = time.time()
        digest = hash_file(Path(abspath), progress)
        racy = started - before.st_mtime_ns / 1e9 < self.RACY_SECONDS
        if before.st_size >= self.MIN_SIZE and not racy and self._key(os.stat(abspath)) == key:
            self._entries[abspath] = {**key, "sha256": digest}
            self._write(abspath)
        return digest

    def _write(self, updated: str) -> None:
        # Merge with what other builds wrote meanwhile, so concurrent builds lose little.
        merged = {**self._read(), updated: self._entries[updated]}
        self._entries = merged
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if not is_real_dir(self.cache_dir):
            return  # a symlink planted in the store: the cache is only a speed-up, never written through one
        fd, tmp = tempfile.mkstemp(prefix=".file-digests-", suffix=".tmp", dir=self.cache_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(merged, f, sort_keys=True)
            os.replace(tmp, self.file)
        except BaseException:
            os.unlink(tmp)
            raise
