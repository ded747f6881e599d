"""The one rule for symlinks in an image, applied alike by what builds images and by what pulls them.

A symlink in an image is accepted when its target is relative and, resolved inside the image's
file tree from the symlink's own directory (following the image's other symlinks, as a container
runtime would), it never climbs above the image root. Refused: absolute targets (a runtime reads
them from the image root, any tool on an unpacked image from the host's root: the same link names
two different files), targets that climb out, chains that do not resolve (a loop, more than
:data:`MAX_HOPS` links), and targets longer than Linux's ``PATH_MAX``.

The build applies it to every symlink it writes into a layer and to the final image's tree; pull
applies it to every symlink of every layer and to the pulled image's tree; so ``pull`` accepts
exactly the symlinks ``build`` can produce. (The build also refuses, at the source, a symlink of
the build context whose target leaves the context: see :mod:`ggufpack.engine.ops.copy`.)
"""

from __future__ import annotations

from collections.abc import Callable

from ggufpack.errors import GGUFPackError, shown

#: Linux's ``PATH_MAX`` less the NUL: no longer target can be resolved anyway
MAX_TARGET_BYTES = 4095
#: Linux's limit on symlinks followed in one resolution (``ELOOP`` beyond)
MAX_HOPS = 40

#: what a tree holds at a path (clean, relative): ``(kind, symlink target)``, or None when nothing
Lookup = Callable[[str], "tuple[str, str | None] | None"]


class UnsafeSymlinkError(GGUFPackError):
    """A symlink whose target leaves the image tree (or cannot be resolved inside it)."""


class _Resolver:
    def __init__(self, lookup: Lookup | None) -> None:
        self.lookup = lookup
        self.memo: dict[str, tuple[str, ...] | None] = {}

    def link(self, path: str, target: str, hops: int) -> tuple[str, ...] | None:
        """Where the symlink at ``path`` leads, as clean components (None: through a non-directory)."""
        if path in self.memo:
            return self.memo[path]
        if hops > MAX_HOPS:
            raise UnsafeSymlinkError(f"does not resolve (a loop, or a chain of more than {MAX_HOPS} symlinks)")
        if not target:
            raise UnsafeSymlinkError("has an empty target")
        if len(target.encode("utf-8", "surrogatepass")) > MAX_TARGET_BYTES:
            raise UnsafeSymlinkError(f"has a target longer than {MAX_TARGET_BYTES} bytes")
        if target.startswith("/"):
            raise UnsafeSymlinkError("has an absolute target; symlinks in an image must be relative")
        resolved = self._walk(path.split("/")[:-1], target, hops)
        self.memo[path] = resolved
        return resolved

    def _walk(self, current: list[str], target: str, hops: int) -> tuple[str, ...] | None:
        parts = target.split("/")
        for i, part in enumerate(parts):
            if part in ("", "."):
                continue
            if part == "..":
                if not current:
                    raise UnsafeSymlinkError("points outside the image root")
                current.pop()
                continue
            current.append(part)
            found = self.lookup("/".join(current)) if self.lookup is not None else None
            if found is None:
                continue  # nothing there (yet): the rest is read as plain names
            kind, linkname = found
            if kind == "symlink":
                try:
                    resolved = self.link("/".join(current), linkname or "", hops + 1)
                except UnsafeSymlinkError as exc:
                    if str(exc).startswith("goes through"):
                        raise
                    raise UnsafeSymlinkError(f"goes through {shown('/' + '/'.join(current))}, which {exc}") from None
                if resolved is None:
                    return None
                current = list(resolved)
            elif kind != "dir" and any(p not in ("", ".") for p in parts[i + 1:]):
                return None  # a file used as a directory: the runtime stops here (ENOTDIR)
        return tuple(current)


def check_symlink(path: str, target: str, lookup: Lookup | None = None) -> None:
    """Refuse the symlink ``path -> target`` (``path`` clean and relative to the image root) unless
    the rule above accepts it; ``lookup`` is the tree it lives in (None: the link on its own)."""
    try:
        _Resolver(lookup).link(path, target, 0)
    except UnsafeSymlinkError as exc:
        raise _named(path, target, exc) from None


def _named(path: str, target: str, exc: UnsafeSymlinkError) -> UnsafeSymlinkError:
    return UnsafeSymlinkError(f"the symlink {shown('/' + path)} -> {shown(target)} {exc}")


def check_tree(links: dict[str, str], lookup: Lookup) -> None:
    """:func:`check_symlink` for every symlink of a tree (``links``: path → target), sharing the work."""
    resolver = _Resolver(lookup)
    for path in sorted(links):
        try:
            resolver.link(path, links[path], 0)
        except UnsafeSymlinkError as exc:
            raise _named(path, links[path], exc) from None
