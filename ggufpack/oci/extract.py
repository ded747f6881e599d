"""Reading tar layers, and applying them to a directory without ever writing outside it.

Layers come from registries, so every member is treated as hostile: absolute paths, ``..``
components, device files, hardlinks to outside and symlinks the image rule refuses
(:mod:`ggufpack.oci.symlinks`: absolute targets, targets that climb out) are refused with an
error naming the member; nothing is ever written through a symlink (a layer that puts a symlink at
``a`` and then a file at ``a/x`` is refused). OCI whiteouts (``.wh.<name>`` and the opaque marker
``.wh..wh..opq``) delete what lower layers put there, so layers applied in order give the image's
file tree.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ggufpack.errors import GGUFPackError
from ggufpack.oci.mediatypes import GZIP_LAYER_TYPES, PLAIN_LAYER_TYPES
from ggufpack.oci.symlinks import UnsafeSymlinkError, check_symlink

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_COPY_BUFFER = 8 << 20


@dataclass(frozen=True)
class LayerMember:
    """One tar member, checked and normalized.

    ``path`` is relative with no ``.``/``..`` parts (``""`` is the root, only for an opaque
    marker). ``kind`` is ``file``, ``dir``, ``symlink``, ``hardlink``, ``whiteout`` (``path`` is
    what it deletes) or ``opaque`` (``path`` is the directory whose lower contents it hides).
    ``linkname`` is a symlink's target as stored, or a hardlink's normalized target path.
    """

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: str | None = None
    data_offset: int | None = None  # where a file's bytes start in an uncompressed tar blob


def iter_layer_members(
    blob: BinaryIO | Path, media_type: str, *, random_access: bool = False,
) -> Iterator[tuple[LayerMember, BinaryIO | None]]:
    """Yield each member with a reader of its content (files only), valid until the next member.

    A file's ``data_offset`` is only meaningful for uncompressed layers: with gzip it is an offset
    into the decompressed stream. ``random_access`` (uncompressed layers in a seekable file) reads
    only the headers, seeking over the data, so indexing a 10 GB layer reads a few KiB.
    """
    mode = _tar_mode(media_type)
    if random_access and mode == "r|":
        mode = "r:"  # an uncompressed tar in a seekable file: headers are read, file data skipped by seeking
    with ExitStack() as stack:
        fileobj = stack.enter_context(open(blob, "rb")) if isinstance(blob, Path) else blob
        try:
            tar = stack.enter_context(tarfile.open(fileobj=fileobj, mode=mode))
            for info in tar:
                member = _member(info)
                if member is not None:
                    yield member, tar.extractfile(info) if member.kind == "file" else None
        except _CORRUPT as e:
            raise _corrupt(media_type, e) from e


def extract_layer(blob: BinaryIO | Path, dest: Path, media_type: str) -> None:
    """Apply a layer to ``dest`` (created if missing), on top of what lower layers put there.

    Ownership is not applied (we do not run as root); set-id bits are dropped; directories stay
    writable by their owner so that later layers can be applied.
    """
    dest.mkdir(parents=True, exist_ok=True)
    _Applier(Path(os.path.realpath(dest))).apply(blob, media_type)


class _Applier:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: set[str] = set()
        self.dirs: list[LayerMember] = []
        self.symlinks: list[str] = []

    def apply(self, blob: BinaryIO | Path, media_type: str) -> None:
        for member, content in iter_layer_members(blob, media_type):
            try:
                self._apply_one(member, content)
            except _CORRUPT as e:
                raise _corrupt(media_type, e) from e
            except OSError as e:
                raise GGUFPackError(f"cannot extract layer member {member.path!r} into {self.root}: {e}") from e
            self.created.add(member.path)
        if self.symlinks:
            # A new symlink can redirect an older one (``a -> b/..`` once ``b`` becomes ``b -> .``),
            # so every symlink in the tree is checked again.
            for link in _all_symlinks(self.root):
                self._check_symlink_inside(link)
        for member in sorted(self.dirs, key=lambda m: m.path, reverse=True):
            target = self.root / member.path
            if not stat.S_ISDIR(os.lstat(target).st_mode):  # replaced later in this layer
                continue
            os.chmod(target, (member.mode & 0o777) | 0o700)
            os.utime(target, (member.mtime, member.mtime))

    def _apply_one(self, member: LayerMember, content: BinaryIO | None) -> None:
        if member.kind in ("opaque", "whiteout"):
            if self._walk_parents(
                member.path if member.kind == "opaque" else posixpath.dirname(member.path), member, create=False
            ):
                self._remove_lower(member.path, keep_self=member.kind == "opaque")
            return
        self._walk_parents(posixpath.dirname(member.path), member, create=True)
        target = self.root / member.path
        if member.kind == "dir":
            if not (os.path.isdir(target) and not os.path.islink(target)):
                _remove(target)
                os.mkdir(target, 0o755)
            self.dirs.append(member)
            return
        _remove(target)
        if member.kind == "file":
            assert content is not None
            self._write_file(target, member, content)
        elif member.kind == "symlink":
            assert member.linkname is not None
            os.symlink(member.linkname, target)
            self.symlinks.append(member.path)
            self._check_symlink_inside(member.path)
        else:
            assert member.linkname is not None
            self._link(target, member)
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)

    def _walk_parents(self, parent: str, member: LayerMember, *, create: bool) -> bool:
        """Check (and with ``create``, make) the directory ``parent`` under the root, refusing any
        component that is a symlink or a file. Returns whether it exists."""
        current = self.root
        for part in parent.split("/") if parent else []:
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    return False
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise GGUFPackError(
                    f"layer member {member.path!r} would be written through the symlink "
                    f"{current.relative_to(self.root).as_posix()!r}; the layer is unsafe, refusing it"
                )
            if not stat.S_ISDIR(st.st_mode):
                raise GGUFPackError(
                    f"layer member {member.path!r} needs {current.relative_to(self.root).as_posix()!r} "
                    "to be a directory, but it is a file; the layer is malformed"
                )
        return True

    def _write_file(self, target: Path, member: LayerMember, content: BinaryIO) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(target, flags, 0o600)
        with open(fd, "wb", closefd=True) as out:
            shutil.copyfileobj(content, out, _COPY_BUFFER)
            os.fchmod(out.fileno(), member.mode & 0o777)

    def _link(self, target: Path, member: LayerMember) -> None:
        assert member.linkname is not None
        source = self.root / member.linkname
        st = None
        if self._walk_parents(posixpath.dirname(member.linkname), member, create=False):
            with suppress(FileNotFoundError):
                st = os.lstat(source)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise GGUFPackError(
                f"layer member {member.path!r} is a hardlink to {member.linkname!r}, which is not a "
                "regular file extracted before it; the layer is malformed or unsafe"
            )
        os.link(source, target, follow_symlinks=False)

    def _check_symlink_inside(self, path: str) -> None:
        """Resolve the symlink through what is on disk now; remove it and fail if it leaves root."""
        link = self.root / path
        if not os.path.islink(link):
            return
        resolved = os.path.realpath(link)
        if os.path.commonpath([resolved, self.root]) != str(self.root):
            target = os.readlink(link)
            os.unlink(link)
            raise GGUFPackError(
                f"layer member {path!r} is a symlink to {target!r}, which resolves outside the image "
                "root; the layer is unsafe, refusing it"
            )

    def _remove_lower(self, path: str, *, keep_self: bool) -> None:
        """Remove what lower layers put at ``path`` (recursively), keeping what this layer made."""
        target = self.root / path if path else self.root
        if path in self.created or keep_self:
            if os.path.isdir(target) and not os.path.islink(target):
                for name in os.listdir(target):
                    self._remove_lower(posixpath.join(path, name) if path else name, keep_self=False)
            return
        _remove(target)


def _all_symlinks(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                yield os.path.relpath(full, root).replace(os.sep, "/")


def _remove(target: Path) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target)
    else:
        os.unlink(target)


_CORRUPT = (tarfile.TarError, EOFError, zlib.error)


def _corrupt(media_type: str, error: Exception) -> GGUFPackError:
    return GGUFPackError(
        f"layer is not a valid {media_type} archive ({error}); the blob is corrupt or truncated: "
        "remove it from the store and pull or build again"
    )


def _tar_mode(media_type: str) -> str:
    if media_type in GZIP_LAYER_TYPES:
        return "r|gz"
    if media_type in PLAIN_LAYER_TYPES:
        return "r|"
    raise GGUFPackError(
        f"cannot unpack a layer of media type {media_type!r}: only tar and tar+gzip layers are supported"
    )


def _member(info: tarfile.TarInfo) -> LayerMember | None:
    """Check one tar header; ``None`` for the root directory entry (``./``)."""
    path = _normalize(info.name, info.name)
    if not path:
        if info.isdir():
            return None
        raise GGUFPackError(f"layer member {info.name!r} has an empty path; the layer is malformed")
    base = posixpath.basename(path)
    fields = dict(mode=info.mode, uid=info.uid, gid=info.gid, size=info.size, mtime=int(info.mtime))
    if base == OPAQUE_MARKER:
        return LayerMember(posixpath.dirname(path), "opaque", **{**fields, "size": 0})
    if base.startswith(WHITEOUT_PREFIX):
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise GGUFPackError(f"layer member {info.name!r} is an invalid whiteout; the layer is unsafe")
        return LayerMember(posixpath.join(posixpath.dirname(path), hidden), "whiteout", **{**fields, "size": 0})
    if info.isreg():
        return LayerMember(path, "file", **fields, data_offset=info.offset_data)
    if info.isdir():
        return LayerMember(path, "dir", **{**fields, "size": 0})
    if info.issym():
        _check_symlink_target(info, path)
        return LayerMember(path, "symlink", **{**fields, "size": 0}, linkname=info.linkname)
    if info.islnk():
        target = _normalize(info.linkname, info.name)
        if not target:
            raise GGUFPackError(f"layer member {info.name!r} is a hardlink to the root; the layer is unsafe")
        return LayerMember(path, "hardlink", **{**fields, "size": 0}, linkname=target)
    what = "a device file" if info.ischr() or info.isblk() else "a FIFO" if info.isfifo() else "of an unknown type"
    raise GGUFPackError(f"layer member {info.name!r} is {what}, which a model image must not contain")


def _normalize(name: str, member: str) -> str:
    """``name`` as a clean relative path; refuses absolute paths and ``..``."""
    if name.startswith("/"):
        raise GGUFPackError(f"layer member {member!r} uses the absolute path {name!r}; the layer is unsafe")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise GGUFPackError(f"layer member {member!r} uses '..' in {name!r}; the layer is unsafe")
    return "/".join(parts)


def _check_symlink_target(info: tarfile.TarInfo, path: str) -> None:
    """The image's symlink rule (:mod:`ggufpack.oci.symlinks`) for the link on its own; chains through
    other links are checked on the tree (pull) or on disk (:func:`extract_layer`)."""
    try:
        check_symlink(path, info.linkname)
    except UnsafeSymlinkError as exc:
        raise UnsafeSymlinkError(f"layer member {info.name!r}: {exc}; the layer is unsafe") from None
