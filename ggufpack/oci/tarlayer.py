"""Deterministic tar layers.

A layer is a list of :class:`LayerEntry` written by :func:`write_layer` as a POSIX (ustar) tar,
with PAX records only where ustar cannot say something. The bytes depend on nothing but the
entries and the ``mtime`` passed in: entries are sorted, owner names are empty, there are no
access/change times, and the gzip framing is fixed. So the same inputs give the same layer digest
on any machine (for gzip layers: any machine with the same zlib deflate, see ``_gzip_header``).

Regular files of 1 MiB or more start at a 4096-byte aligned offset in the uncompressed tar: a PAX
``comment`` record of computed length pads the header. A reader can then mmap a GGUF inside the
layer blob at a page boundary, and a filesystem with reflinks can share extents between the blob
and a plain copy of the file. :attr:`LayerInfo.file_offsets` says where each file's bytes are.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.oci.descriptor import Descriptor
from ggufpack.oci.mediatypes import OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP
from ggufpack.oci.symlinks import UnsafeSymlinkError, check_symlink
from ggufpack.progress import QUIET, Bar, Progress

BLOCK = 512
ALIGNMENT = 4096
ALIGN_MIN_SIZE = 1 << 20
CHUNK = 8 << 20
COMPRESS_LIMIT = 64 << 20
GZIP_LEVEL = 6
GGUF_MAGIC = b"GGUF"

_USTAR_ID_MAX = 0o7777777
_USTAR_SIZE_MAX = 0o77777777777
_PAX_NAME = b"././@PaxHeader"
_MIN_COMMENT_RECORD = len(b"12 comment=\n")
_TYPE_FLAGS = {"file": b"0", "symlink": b"2", "dir": b"5"}


@dataclass(frozen=True)
class LayerEntry:
    """One tar member.

    ``path`` is relative and POSIX-style (``models/m.gguf``). A ``file`` takes its bytes from
    ``source`` (read when the layer is written) or from inline ``data``; ``size`` may be left at -1
    and is then taken from those. A ``symlink`` needs ``linkname``.
    """

    path: str
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    source: Path | None = None
    data: bytes | None = None
    linkname: str | None = None
    size: int = -1

    def __post_init__(self) -> None:
        _check_entry_path(self.path)
        if self.kind not in _TYPE_FLAGS:
            raise UsageError(f"layer entry {self.path!r}: kind must be file, dir or symlink, not {self.kind!r}")
        if not 0 <= self.mode <= 0o7777:
            raise UsageError(f"layer entry {self.path!r}: mode {self.mode:#o} is not a permission mode")
        if self.uid < 0 or self.gid < 0:
            raise UsageError(f"layer entry {self.path!r}: uid and gid must not be negative")
        if self.kind == "file":
            object.__setattr__(self, "size", self._file_size())
        else:
            if self.source is not None or self.data is not None:
                raise UsageError(f"layer entry {self.path!r}: only a file has content")
            if self.size not in (-1, 0):
                raise UsageError(f"layer entry {self.path!r}: only a file has a size")
            object.__setattr__(self, "size", 0)
        if (self.kind == "symlink") != bool(self.linkname):
            raise UsageError(f"layer entry {self.path!r}: a symlink, and only a symlink, needs a target")
        if self.linkname is not None and "\0" in self.linkname:
            raise UsageError(f"layer entry {self.path!r}: symlink target contains a NUL byte")
        if self.linkname is not None:
            try:  # the rule pull applies: a layer we write is one pull accepts
                check_symlink(self.path.strip("/"), self.linkname)
            except UnsafeSymlinkError as exc:
                raise UnsafeSymlinkError(f"layer entry {self.path!r}: {exc}") from None

    def _file_size(self) -> int:
        if (self.source is None) == (self.data is None):
            raise UsageError(f"layer entry {self.path!r}: a file needs exactly one of source or data")
        if self.data is not None:
            actual = len(self.data)
        else:
            assert self.source is not None
            try:
                st = os.stat(self.source)
            except OSError as e:
                raise UsageError(f"cannot read {self.source}: {e.strerror}") from e
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{self.source} is not a regular file; only regular files can be packed")
            actual = st.st_size
        if self.size not in (-1, actual):
            raise UsageError(f"layer entry {self.path!r}: size {self.size} does not match content ({actual})")
        return actual


@dataclass(frozen=True)
class LayerInfo:
    """What :func:`write_layer` wrote.

    ``diff_id`` is the digest of the uncompressed tar, ``digest`` and ``size`` those of the bytes
    written to the sink (equal to the uncompressed ones for an uncompressed layer).
    ``file_offsets`` maps each regular file's path to ``(offset, size)`` of its bytes in the
    uncompressed tar.
    """

    media_type: str
    digest: str
    diff_id: str
    size: int
    file_offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    def descriptor(self, annotations: dict[str, str] | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, dict(annotations or {}))


def choose_compression(entries: Iterable[LayerEntry]) -> bool:
    """Whether a layer should be gzip: not when it holds a GGUF file or more than 64 MiB.

    Quantized weights do not compress, and an uncompressed layer keeps a GGUF usable in place.
    """
    total = 0
    for entry in entries:
        if entry.kind != "file":
            continue
        if entry.path.lower().endswith(".gguf") or _starts_with_gguf_magic(entry):
            return False
        total += entry.size
    return total <= COMPRESS_LIMIT


def write_layer(
    entries: Iterable[LayerEntry],
    sink: BinaryIO,
    *,
    compress: bool,
    mtime: int,
    progress: Progress = QUIET,
) -> LayerInfo:
    """Stream a deterministic tar of ``entries`` into ``sink`` and hash it on the way."""
    if not 0 <= mtime <= _USTAR_SIZE_MAX:
        raise UsageError(f"mtime {mtime} is out of range; set SOURCE_DATE_EPOCH to a Unix time from 1970 on")
    ordered = _sorted_unique(entries)
    out = _GzipOutput(sink) if compress else _PlainOutput(sink)
    offsets: dict[str, tuple[int, int]] = {}
    total = sum(e.size for e in ordered)
    # Two copy buffers for the whole layer, no larger than its largest source file.
    chunk = min(CHUNK, max((e.size for e in ordered if e.source is not None), default=0))
    buffers = (bytearray(chunk), bytearray(chunk))
    with progress.bar("packing layer", total=total) as bar, ThreadPoolExecutor(max_workers=1) as pool:
        for entry in ordered:
            out.write(_member_header(entry, mtime, out.offset))
            if entry.kind != "file":
                continue
            offsets[entry.path] = (out.offset, entry.size)
            if entry.data is not None:
                out.write(entry.data)
                bar.update(entry.size)
            else:
                assert entry.source is not None
                _copy_source(entry, out, pool, buffers, bar)
            out.write(bytes(-entry.size % BLOCK))
        out.write(bytes(2 * BLOCK))
    digest, diff_id, size = out.finish()
    media_type = OCI_LAYER_TAR_GZIP if compress else OCI_LAYER_TAR
    return LayerInfo(media_type, digest, diff_id, size, offsets)


def _check_entry_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"invalid layer path {path!r}: use a relative POSIX path without '.', '..' or empty parts")


def _starts_with_gguf_magic(entry: LayerEntry) -> bool:
    if entry.data is not None:
        return entry.data[:4] == GGUF_MAGIC
    assert entry.source is not None
    with open(entry.source, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def _sorted_unique(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    ordered = sorted(entries, key=lambda e: e.path.encode("utf-8"))
    for a, b in itertools.pairwise(ordered):
        if a.path == b.path:
            raise UsageError(f"layer path {a.path!r} appears twice; each path can be written once per layer")
    return ordered


# --- headers -------------------------------------------------------------------------------------


def _member_header(entry: LayerEntry, mtime: int, offset: int) -> bytes:
    """The header block(s) of ``entry`` when it starts at ``offset`` in the uncompressed tar."""
    name = entry.path + "/" if entry.kind == "dir" else entry.path
    records: list[bytes] = []
    name_field, prefix_field = _split_name(name)
    if name_field is None:
        records.append(_pax_record("path", name.encode("utf-8")))
        name_field, prefix_field = _ascii_fallback(name), b""
    link_field = b""
    if entry.linkname is not None:
        link_bytes = entry.linkname.encode("utf-8")
        if len(link_bytes) > 100 or not entry.linkname.isascii():
            records.append(_pax_record("linkpath", link_bytes))
            link_field = _ascii_fallback(entry.linkname)
        else:
            link_field = link_bytes
    size, uid, gid = entry.size, entry.uid, entry.gid
    if size > _USTAR_SIZE_MAX:
        records.append(_pax_record("size", str(size).encode()))
        size = 0
    if uid > _USTAR_ID_MAX:
        records.append(_pax_record("uid", str(uid).encode()))
        uid = 0
    if gid > _USTAR_ID_MAX:
        records.append(_pax_record("gid", str(gid).encode()))
        gid = 0
    if entry.kind == "file" and entry.size >= ALIGN_MIN_SIZE and (records or (offset + BLOCK) % ALIGNMENT):
        records.append(_padding_record(offset, sum(map(len, records))))
    member = _ustar_block(
        name_field, prefix_field, entry.mode, uid, gid, size, mtime, _TYPE_FLAGS[entry.kind], link_field
    )
    if not records:
        return member
    pax_data = b"".join(records)
    pax = _ustar_block(_PAX_NAME, b"", 0o644, 0, 0, len(pax_data), mtime, b"x", b"")
    return pax + pax_data + bytes(-len(pax_data) % BLOCK) + member


def _split_name(name: str) -> tuple[bytes | None, bytes]:
    """ustar ``(name, prefix)`` fields for an ASCII name, or ``(None, b"")`` when a PAX path is needed."""
    if not name.isascii():
        return None, b""
    raw = name.encode("ascii")
    if len(raw) <= 100:
        return raw, b""
    # The largest prefix (up to 155 bytes, cut at a '/') leaves the shortest name part; a
    # directory's trailing '/' stays in the name part.
    cut = raw.rfind(b"/", 0, min(156, len(raw) - 1))
    if cut > 0 and len(raw) - cut - 1 <= 100:
        return raw[cut + 1 :], raw[:cut]
    return None, b""


def _ascii_fallback(text: str) -> bytes:
    """What readers without PAX support see: an ASCII, truncated version of ``text``."""
    return text.encode("ascii", "replace")[:100]


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("ascii") + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode("ascii") + body


def _padding_record(offset: int, other_records: int) -> bytes:
    """A ``comment`` record sized so that file data after the PAX header lands on ALIGNMENT.

    Layout from ``offset``: PAX header block, PAX data (padded to whole blocks), member header
    block, file data. We make the PAX data exactly ``k`` blocks long with ``k`` chosen so that the
    data offset is aligned, growing ``k`` by a whole alignment when the record would be too short.
    """
    blocks = (-(offset + 2 * BLOCK) % ALIGNMENT) // BLOCK
    while blocks * BLOCK - other_records < _MIN_COMMENT_RECORD:
        blocks += ALIGNMENT // BLOCK
    length = blocks * BLOCK - other_records
    prefix = f"{length} comment=".encode("ascii")
    return prefix + b"." * (length - len(prefix) - 1) + b"\n"


def _ustar_block(
    name: bytes,
    prefix: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    type_flag: bytes,
    linkname: bytes,
) -> bytes:
    fields = [
        name.ljust(100, b"\0"),
        b"%07o\0" % mode,
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b" " * 8,  # checksum, computed below over the block with this field as spaces
        type_flag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        bytes(32),  # uname
        bytes(32),  # gname
        b"0000000\0",  # devmajor
        b"0000000\0",  # devminor
        prefix.ljust(155, b"\0"),
    ]
    block = bytearray(b"".join(fields).ljust(BLOCK, b"\0"))
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


# --- output streams ------------------------------------------------------------------------------


class _PlainOutput:
    """An uncompressed tar stream: one sha256 serves as both digest and diff_id."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.hasher = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes | memoryview) -> None:
        self.hasher.update(data)
        _write_all(self.sink, data)
        self.offset += len(data)

    def write_chunk(self, data: memoryview, pool: ThreadPoolExecutor) -> Future[None]:
        """Write ``data`` while a worker hashes it; the caller waits on the future before the next
        hash (hashlib and file writes both release the GIL on large buffers, so they overlap)."""
        pending = pool.submit(self.hasher.update, data)
        _write_all(self.sink, data)
        self.offset += len(data)
        return pending

    def finish(self) -> tuple[str, str, int]:
        digest = "sha256:" + self.hasher.hexdigest()
        return digest, digest, self.offset


class _GzipOutput:
    """A gzip stream with a fixed header; hashes the tar (diff_id) and the gzip bytes (digest)."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.diff_hasher = hashlib.sha256()
        self.hasher = hashlib.sha256()
        self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
        self.crc = 0
        self.offset = 0
        self.size = 0
        self._emit(_gzip_header())

    def write(self, data: bytes | memoryview) -> None:
        self.diff_hasher.update(data)
        self.crc = zlib.crc32(data, self.crc)
        self.offset += len(data)
        self._emit(self.compressor.compress(data))

    def write_chunk(self, data: memoryview, pool: ThreadPoolExecutor) -> Future[None]:
        self.write(data)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def finish(self) -> tuple[str, str, int]:
        self._emit(self.compressor.flush() + struct.pack("<II", self.crc, self.offset & 0xFFFFFFFF))
        return "sha256:" + self.hasher.hexdigest(), "sha256:" + self.diff_hasher.hexdigest(), self.size

    def _emit(self, data: bytes) -> None:
        if data:
            self.hasher.update(data)
            _write_all(self.sink, data)
            self.size += len(data)


def _gzip_header() -> bytes:
    """RFC 1952 header: deflate, no flags, mtime 0, XFL 0 (level 6), OS 255 (unknown).

    Python's gzip module would put a file name and the time in; this is fixed instead. The deflate
    bytes themselves come from the zlib library linked into Python (identical across builds of the
    same zlib; a different deflate implementation such as zlib-ng may choose other bytes).
    """
    return b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"


def _write_all(sink: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = sink.write(view)
        if written is None or written >= len(view):
            return
        view = view[written:]


def _copy_source(
    entry: LayerEntry,
    out: _PlainOutput | _GzipOutput,
    pool: ThreadPoolExecutor,
    buffers: tuple[bytearray, bytearray],
    bar: Bar,
) -> None:
    """Copy a source file into the layer through the two ``buffers`` in turn: while ``pool`` hashes
    one piece, this thread writes it and reads the next one into the other buffer."""
    assert entry.source is not None
    chunk = len(buffers[0])
    with open(entry.source, "rb", buffering=0) as src:
        if os.fstat(src.fileno()).st_size != entry.size:
            raise _changed(entry)
        pending: Future[None] | None = None
        remaining, turn = entry.size, 0
        try:
            while remaining:
                view = memoryview(buffers[turn])[: min(chunk, remaining)]
                if _read_full(src, view) != len(view):
                    raise _changed(entry)
                if pending is not None:
                    pending.result()
                pending = out.write_chunk(view, pool)
                remaining -= len(view)
                turn ^= 1
                bar.update(len(view))
        finally:
            if pending is not None:
                pending.result()


def _read_full(src: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _changed(entry: LayerEntry) -> GGUFPackError:
    return GGUFPackError(
        f"{entry.source} changed while it was being packed (expected {entry.size} bytes); "
        "make sure nothing writes to it during the build and run the build again"
    )
