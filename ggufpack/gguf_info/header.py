"""Read the header of a GGUF file, and only the header, from hostile input without fear.

The header (magic, version, counts, metadata key/values, tensor infos) is read through a small
buffered cursor; the tensor data is never touched, so a 100 GB model, a sparse file or a blob that
holds nothing but the stored header all read the same, in milliseconds.

Every length read from the file is checked before anything is allocated: a string, an array, the
tensor count and the key/value count must fit in what is left of the file *and* under a fixed cap
(a sparse file is as large as it claims, so the file size alone does not bound the work). The whole
header is capped too, since many small things amplify as well as one large one: its size
(:data:`MAX_HEADER_BYTES`), the metadata values and array items it holds together
(:data:`MAX_HEADER_ITEMS`), and the arrays nested inside arrays (:data:`MAX_NESTED_ARRAYS`). Anything
absurd becomes a :class:`~ggufpack.errors.GGUFPackError` naming the byte offset, never a crash, a
``MemoryError`` or a hang, and no message echoes more than a line of what the file holds.

:func:`read_header_file` also checks a file's tensor data against the file (:func:`check_tensor_data`):
data past the end, unaligned or overlapping cannot load, so such a file is refused.

Type tables (value types, ggml types, block sizes) come from ``gguf.constants``.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from gguf.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
)

from ggufpack.errors import GGUFPackError, clipped, shown

MAX_KEY_BYTES = 1 << 20
"""Longest metadata key (or tensor name) accepted, in bytes."""
MAX_STRING_BYTES = 128 << 20
"""Longest metadata string value accepted, in bytes (chat templates, the longest real ones, take kilobytes)."""
MAX_HEADER_ITEMS = 1 << 23
"""Most metadata values in one header, every array item (nested ones too) counting as one: 8 M, where
the largest vocabularies (tokens, scores, types, merges) take about a million."""
MAX_ARRAY_ITEMS = MAX_HEADER_ITEMS
"""Most items in one metadata array."""
MAX_ARRAY_DEPTH = 8
"""Deepest nesting of arrays inside arrays."""
MAX_NESTED_ARRAYS = 1 << 16
"""Most arrays inside arrays in one header (llama.cpp reads none; each costs an object, not a few bytes)."""
MAX_HEADER_BYTES = 256 << 20
"""Largest header (metadata and tensor infos) read, in bytes; real ones take a few megabytes."""
MAX_TENSORS = 1 << 20
MAX_KVS = 1 << 20
GGML_MAX_DIMS = 4
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
_CHUNK = 1 << 20
_SUPPORTED_VERSIONS = (2, 3)

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_NUMPY_DTYPES: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "u1",
    GGUFValueType.INT8: "i1",
    GGUFValueType.UINT16: "u2",
    GGUFValueType.INT16: "i2",
    GGUFValueType.UINT32: "u4",
    GGUFValueType.INT32: "i4",
    GGUFValueType.FLOAT32: "f4",
    GGUFValueType.UINT64: "u8",
    GGUFValueType.INT64: "i8",
    GGUFValueType.FLOAT64: "f8",
}
# Smallest encoding of one value of each type: bounds array lengths by the bytes left in the file.
_MIN_VALUE_BYTES: dict[GGUFValueType, int] = {
    **{t: struct.calcsize(f) for t, f in _SCALAR_FORMATS.items()},
    GGUFValueType.STRING: 8,
    GGUFValueType.ARRAY: 12,
}
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset

SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
"""File names of a split set, as llama.cpp's ``gguf-split`` writes them (``NAME-00001-of-00003.gguf``)."""


class GGUFArray(list):  # type: ignore[type-arg]
    """A metadata array: a plain list that also remembers its GGUF item type.

    ``offset`` is where the array (its item-type field) starts in the file and ``nbytes`` the size of
    its items; gguf-parser-go reports both (``startOffset``, ``size``) and sizes tokenizers from them.
    """

    __slots__ = ("item_type", "nbytes", "offset")

    def __init__(self, items: Sequence[Any], item_type: GGUFValueType, *, offset: int = 0, nbytes: int = 0) -> None:
        super().__init__(items)
        self.item_type = item_type
        self.offset = offset
        self.nbytes = nbytes


@dataclass(frozen=True)
class ElidedArray:
    """A metadata array whose items were left out (of an image config); only its shape is known."""

    item_type: GGUFValueType
    length: int
    offset: int = 0
    nbytes: int = 0

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class ElidedString:
    """A metadata string left out of an image config for its length; only its size in bytes is known."""

    nbytes: int

    def __len__(self) -> int:
        return self.nbytes


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header. ``shape`` is in GGUF order: ``shape[0]`` is the row length."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLQuantizationType
    offset: int
    """Byte offset of the data, relative to the start of the data section."""

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        block_size, type_size = GGML_QUANT_SIZES[self.ggml_type]
        return self.n_elements // block_size * type_size


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data of one GGUF file."""

    version: int
    metadata: dict[str, Any]
    """Key → value: ``int``, ``float``, ``bool``, ``str``, :class:`GGUFArray`, or, rebuilt from an image
    config, :class:`ElidedArray` and :class:`ElidedString`."""
    tensors: list[TensorInfo]
    data_offset: int
    """Where the tensor data starts: the end of the tensor infos, rounded up to ``alignment``."""
    alignment: int
    file_size: int
    value_types: dict[str, GGUFValueType] = field(default_factory=dict)
    """The GGUF type of each metadata value (Python's ``int`` does not say ``UINT32`` or ``INT64``)."""
    infos_end: int = 0
    """Where the tensor infos end; ``data_offset - infos_end`` is the padding."""

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


class _Cursor:
    """Reads a file object forward in large chunks, knowing its offset and how much is left."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._buf = b""
        self._pos = 0
        self.offset = 0  # from where reading started
        self.size = size
        self.order = "<"
        self._u64 = struct.Struct("<Q").unpack_from
        self.items = 0  # metadata values and array items read so far
        self.nested = 0  # arrays read inside arrays so far

    def set_big_endian(self) -> None:
        self.order = ">"
        self._u64 = struct.Struct(">Q").unpack_from

    @property
    def remaining(self) -> int:
        return self.size - self.offset

    def charge(self, n: int, what: str) -> None:
        """Count ``n`` more metadata values against :data:`MAX_HEADER_ITEMS`."""
        self.items += n
        if self.items > MAX_HEADER_ITEMS:
            raise GGUFPackError(
                f"corrupt GGUF header: {what} at offset {self.offset} brings the header past "
                f"{MAX_HEADER_ITEMS} metadata values and array items, more than any model holds"
            )

    def take(self, n: int) -> bytes:
        avail = len(self._buf) - self._pos
        if avail < n:
            if n > self.remaining:
                raise GGUFPackError(
                    f"truncated GGUF header: needed {n} bytes at offset {self.offset}, the file ends at {self.size}"
                )
            if self.offset + n > MAX_HEADER_BYTES:
                raise GGUFPackError(
                    f"corrupt GGUF header: it goes on past {MAX_HEADER_BYTES >> 20} MiB (at offset {self.offset}), "
                    "far more than any model's metadata and tensor infos"
                )
            want = max(n - avail, _CHUNK)
            chunk = self._f.read(want)
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0
            if len(self._buf) < n:
                raise GGUFPackError(f"truncated GGUF header: could not read {n} bytes at offset {self.offset}")
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        self.offset += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str, min_item_bytes: int, cap: int) -> int:
        """Read a uint64 count of items that each take at least ``min_item_bytes``; check it is sane."""
        at = self.offset
        n = self.unpack("Q")
        if n > cap or n * min_item_bytes > self.remaining:
            raise GGUFPackError(
                f"corrupt GGUF header: {what} {n} at offset {at} is impossible "
                f"({self.remaining} bytes left in the file, limit {cap})"
            )
        return int(n)

    def string(self, what: str, cap: int) -> str:
        # Fast path, when the whole string is already buffered: vocabularies hold 10⁵-10⁶ strings.
        buf, pos = self._buf, self._pos
        if pos + 8 <= len(buf):
            n = self._u64(buf, pos)[0]
            end = pos + 8 + n
            if n <= cap and end <= len(buf):
                self._pos = end
                self.offset += 8 + n
                return buf[pos + 8 : end].decode("utf-8", errors="replace")
        at = self.offset
        n = self.unpack("Q")
        if n > cap or n > self.remaining:
            raise GGUFPackError(
                f"corrupt GGUF header: {what} of {n} bytes at offset {at} is impossible "
                f"({self.remaining} bytes left in the file, limit {cap})"
            )
        return self.take(n).decode("utf-8", errors="replace")


def _value_type(cur: _Cursor, what: str) -> GGUFValueType:
    at = cur.offset
    raw = cur.unpack("I")
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise GGUFPackError(f"corrupt GGUF header: unknown value type {raw} for {what} at offset {at}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str, depth: int) -> Any:
    if vtype == GGUFValueType.STRING:
        return cur.string(f"value of {shown(key)}", MAX_STRING_BYTES)
    if vtype == GGUFValueType.ARRAY:
        return _read_array(cur, key, depth + 1)
    return cur.unpack(_SCALAR_FORMATS[vtype])


def _read_array(cur: _Cursor, key: str, depth: int) -> GGUFArray:
    if depth > MAX_ARRAY_DEPTH:
        raise GGUFPackError(
            f"corrupt GGUF header: arrays nested deeper than {MAX_ARRAY_DEPTH} in {shown(key)} at offset {cur.offset}"
        )
    start = cur.offset
    item_type = _value_type(cur, f"items of {shown(key)}")
    n = cur.count(f"length of array {shown(key)}", _MIN_VALUE_BYTES[item_type], MAX_ARRAY_ITEMS)
    cur.charge(n, f"array {shown(key)} of {n} items")
    if item_type == GGUFValueType.ARRAY:
        cur.nested += n
        if cur.nested > MAX_NESTED_ARRAYS:
            raise GGUFPackError(
                f"corrupt GGUF header: array {shown(key)} at offset {start} brings the header past "
                f"{MAX_NESTED_ARRAYS} arrays inside arrays (llama.cpp reads none)"
            )
    items_start = cur.offset
    items: list[Any]
    if item_type in _NUMPY_DTYPES:
        dtype = np.dtype(_NUMPY_DTYPES[item_type]).newbyteorder(cur.order)
        items = np.frombuffer(cur.take(n * dtype.itemsize), dtype=dtype).tolist()
    elif item_type == GGUFValueType.BOOL:
        items = [b != 0 for b in cur.take(n)]
    elif item_type == GGUFValueType.STRING:
        what = f"item of {shown(key)}"
        items = [cur.string(what, MAX_STRING_BYTES) for _ in range(n)]
    else:
        items = [_read_value(cur, item_type, key, depth) for _ in range(n)]
    return GGUFArray(items, item_type, offset=start, nbytes=cur.offset - items_start)


def checked_tensor_info(name: str, shape: Sequence[int], raw_type: int, offset: int) -> TensorInfo:
    """Build a :class:`TensorInfo` from untrusted fields, refusing what llama.cpp would refuse."""
    if len(shape) > GGML_MAX_DIMS:
        raise GGUFPackError(f"tensor {shown(name)} has {len(shape)} dimensions (at most {GGML_MAX_DIMS})")
    try:
        ggml_type = GGMLQuantizationType(raw_type)
        block_size, _ = GGML_QUANT_SIZES[ggml_type]
    except (ValueError, KeyError):
        raise GGUFPackError(f"tensor {shown(name)} has unknown ggml type {raw_type}") from None
    if any(d < 0 or d > _INT64_MAX for d in shape) or math.prod(shape) > _INT64_MAX:
        raise GGUFPackError(f"tensor {shown(name)} has shape {list(shape)}, more elements than fit in 63 bits")
    if shape and shape[0] % block_size:
        raise GGUFPackError(
            f"tensor {shown(name)} has rows of {shape[0]} elements, "
            f"not a multiple of the {ggml_type.name} block size {block_size}"
        )
    if not 0 <= offset <= _UINT64_MAX:
        raise GGUFPackError(f"tensor {shown(name)} has data offset {offset}, outside 64 bits")
    return TensorInfo(name=name, shape=tuple(shape), ggml_type=ggml_type, offset=offset)


def _read_tensor_info(cur: _Cursor) -> TensorInfo:
    at = cur.offset
    name = cur.string("tensor name", MAX_KEY_BYTES)
    n_dims = cur.unpack("I")
    if n_dims > GGML_MAX_DIMS:
        raise GGUFPackError(
            f"corrupt GGUF header at offset {at}: tensor {shown(name)} has {n_dims} dimensions "
            f"(at most {GGML_MAX_DIMS})"
        )
    shape = [cur.unpack("Q") for _ in range(n_dims)]
    raw_type = cur.unpack("I")
    offset = cur.unpack("Q")
    try:
        return checked_tensor_info(name, shape, raw_type, offset)
    except GGUFPackError as e:
        raise GGUFPackError(f"corrupt GGUF header at offset {at}: {e}") from None


def _alignment(metadata: dict[str, Any], value_types: dict[str, GGUFValueType]) -> int:
    key = Keys.General.ALIGNMENT
    if key not in metadata:
        return GGUF_DEFAULT_ALIGNMENT
    value = metadata[key]
    if value_types[key] != GGUFValueType.UINT32 or value == 0 or value & (value - 1):
        raise GGUFPackError(f"corrupt GGUF header: {key} must be a power of two as uint32, got {shown(value)}")
    return int(value)


def read_header(f: BinaryIO) -> GGUFHeader:
    """Read a GGUF header from a seekable binary file object, starting at its current position.

    Offsets in the result are relative to that position, and ``file_size`` counts from it, so a
    header stored inside a larger stream reads the same as a file of its own.
    """
    start = f.tell()
    size = f.seek(0, io.SEEK_END) - start
    f.seek(start)
    cur = _Cursor(f, size)
    if size < 4:
        raise GGUFPackError(f"not a GGUF file: only {size} bytes")
    magic = cur.take(4)
    if struct.unpack("<I", magic)[0] != GGUF_MAGIC:
        raise GGUFPackError(f"not a GGUF file: bad magic {shown(magic)} (expected b'GGUF')")
    version = cur.unpack("I")
    if version & 0xFFFF == 0 and version:  # written big-endian
        cur.set_big_endian()
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in _SUPPORTED_VERSIONS:
        raise GGUFPackError(
            f"unsupported GGUF version {version} (ggufpack reads versions 2 and 3; re-convert the model)"
        )
    n_tensors = cur.count("tensor count", _MIN_TENSOR_INFO_BYTES, MAX_TENSORS)
    n_kvs = cur.count("metadata key/value count", _MIN_KV_BYTES, MAX_KVS)

    metadata: dict[str, Any] = {}
    value_types: dict[str, GGUFValueType] = {}
    for _ in range(n_kvs):
        at = cur.offset
        key = cur.string("metadata key", MAX_KEY_BYTES)
        if not key or key in metadata:
            raise GGUFPackError(f"corrupt GGUF header: empty or duplicate metadata key {shown(key)} at offset {at}")
        vtype = _value_type(cur, shown(key))
        cur.charge(1, f"metadata key {shown(key)}")
        metadata[key] = _read_value(cur, vtype, key, 0)
        value_types[key] = vtype

    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        at = cur.offset
        info = _read_tensor_info(cur)
        if info.name in names:
            raise GGUFPackError(f"corrupt GGUF header: duplicate tensor name {shown(info.name)} at offset {at}")
        names.add(info.name)
        tensors.append(info)

    alignment = _alignment(metadata, value_types)
    infos_end = cur.offset
    data_offset = -(-infos_end // alignment) * alignment
    return GGUFHeader(
        version=version,
        metadata=metadata,
        tensors=tensors,
        data_offset=data_offset,
        alignment=alignment,
        file_size=size,
        value_types=value_types,
        infos_end=infos_end,
    )


def check_tensor_data(header: GGUFHeader) -> None:
    """Refuse tensor data that a complete file cannot hold, as llama.cpp's loader would: data past the end
    of the file, an offset not a multiple of the alignment, two tensors sharing bytes.

    For whole files only: a header stored without its data (as in an image config) has none to check.
    """
    data_size = header.file_size - header.data_offset
    spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in header.tensors)
    for offset, end, name in spans:
        if offset % header.alignment:
            raise GGUFPackError(f"corrupt GGUF file: tensor {shown(name)} starts at data offset {offset}, "
                                f"not a multiple of the alignment {header.alignment}")
        if end > data_size:
            raise GGUFPackError(
                f"corrupt GGUF file: the data of tensor {shown(name)} (bytes {offset} to {end} of the data section) "
                f"lies past the end of the file, whose data section holds {max(data_size, 0)} bytes: the file is "
                "truncated or its header lies"
            )
    for (_, end_a, a), (begin_b, _, b) in itertools.pairwise([span for span in spans if span[1] > span[0]]):
        if begin_b < end_a:
            raise GGUFPackError(f"corrupt GGUF file: tensors {shown(a)} and {shown(b)} share data bytes")


def read_header_file(path: str | Path) -> GGUFHeader:
    """Read the header of one GGUF file and check its tensor data lie in it; errors name the file."""
    try:
        with open(path, "rb") as f:
            header = read_header(f)
        check_tensor_data(header)
        return header
    except GGUFPackError as e:
        raise GGUFPackError(f"{path}: {e}") from None
    except OSError as e:
        raise GGUFPackError(f"cannot read GGUF file {path}: {e.strerror or e}") from None


def split_names(name: str) -> list[str] | None:
    """Every name of the split set whose shard ``name`` is (``NAME-00002-of-00003.gguf``), in shard order, or
    None when ``name`` is not a shard's name. ``name`` may be a path: the names keep its directory.

    The one place split names are expanded (reading, building, running a split model): the count is at most
    99999 by the pattern, and a numbering that makes no sense (shard 0, shard 4 of 3) is a GGUFPackError.
    """
    m = SPLIT_NAME.fullmatch(name)
    if m is None:
        return None
    count = int(m["count"])
    if count == 0 or not 1 <= int(m["no"]) <= count:
        raise GGUFPackError(f"{clipped(name)}: shard number {m['no']} of {m['count']} makes no sense")
    return [shard_name(m["prefix"], i, count) for i in range(1, count + 1)]


def shard_name(prefix: str, no: int, count: int) -> str:
    """The name of shard ``no`` (from 1) of a split set of ``count`` named ``prefix`` (``NAME-00001-of-00003.gguf``)."""
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf"


def shards_named_after(dest: Path) -> list[Path]:
    """The shards beside ``dest`` named after it (``NAME-NNNNN-of-NNNNN.gguf`` for ``NAME.gguf``, as llama.cpp's
    quantizer writes them with ``--keep-split``), in shard order; none when the directory does not exist."""
    prefix = dest.name.removesuffix(".gguf")
    try:
        entries = list(dest.parent.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p for p in entries if (m := SPLIT_NAME.fullmatch(p.name)) is not None and m["prefix"] == prefix)


def missing_shards(names: Sequence[str], missing: Sequence[str]) -> str:
    """A one-line account of the missing shards of a split set of ``names``, however many there are."""
    others = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return f"{len(missing)} of the {len(names)} shards of the split set are missing: {clipped(missing[0])}{others}"


def shard_paths(path: str | Path) -> list[Path]:
    """All files of the split set ``path`` belongs to (by name), or just ``[path]``."""
    path = Path(path)
    names = split_names(path.name)
    return [path] if names is None else [path.with_name(n) for n in names]


def _int_kv(header: GGUFHeader, key: str) -> int | None:
    value = header.metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_gguf(path: str | Path) -> list[GGUFHeader]:
    """Read the headers of a GGUF file, or of every shard of its split set, in shard order.

    Any shard's name finds the whole set. The shards must agree on ``split.count`` and number
    themselves ``split.no`` 0, 1, ...; the first one's ``split.tensors.count`` must match.
    """
    paths = shard_paths(path)
    missing = [p.name for p in paths if len(paths) > 1 and not p.is_file()]
    if missing:
        raise GGUFPackError(f"{path}: {missing_shards([p.name for p in paths], missing)}")
    headers = [read_header_file(p) for p in paths]
    declared = _int_kv(headers[0], Keys.Split.LLM_KV_SPLIT_COUNT)
    if declared is None:
        if len(paths) > 1:
            raise GGUFPackError(
                f"{paths[0]}: named as shard 1 of {len(paths)} but has no {Keys.Split.LLM_KV_SPLIT_COUNT}"
            )
        return headers
    if declared != len(paths):
        raise GGUFPackError(
            f"{paths[0]}: {Keys.Split.LLM_KV_SPLIT_COUNT} is {declared} but {len(paths)} shard(s) were found "
            "by name; pass a shard named like NAME-00001-of-0000N.gguf"
        )
    for i, (p, h) in enumerate(zip(paths, headers, strict=True)):
        no = _int_kv(h, Keys.Split.LLM_KV_SPLIT_NO)
        count = _int_kv(h, Keys.Split.LLM_KV_SPLIT_COUNT)
        if (no is not None and no != i) or (count is not None and count != declared):
            raise GGUFPackError(f"{p}: says it is shard {no} of {count}, expected {i} of {declared}")
    total = _int_kv(headers[0], Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
    found = sum(len(h.tensors) for h in headers)
    if total is not None and total != found:
        raise GGUFPackError(
            f"{paths[0]}: {Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT} is {total} but the shards hold {found} tensors"
        )
    return headers


def merge_headers(headers: Sequence[GGUFHeader]) -> GGUFHeader:
    """One header describing a whole split set, for facts and estimates.

    Metadata comes from the shards in order (the first value of a key wins), without ``split.no``;
    tensors are concatenated (their offsets stay relative to their own shard's data section);
    sizes add up. Layout fields (``data_offset``, ``infos_end``) are the first shard's.
    """
    if len(headers) == 1:
        return headers[0]
    if not headers:
        raise GGUFPackError("no GGUF headers to merge")
    metadata: dict[str, Any] = {}
    value_types: dict[str, GGUFValueType] = {}
    for h in headers:
        for key, value in h.metadata.items():
            if key != Keys.Split.LLM_KV_SPLIT_NO and key not in metadata:
                metadata[key] = value
                value_types[key] = h.value_types[key]
    first = headers[0]
    return GGUFHeader(
        version=first.version,
        metadata=metadata,
        tensors=[t for h in headers for t in h.tensors],
        data_offset=first.data_offset,
        alignment=first.alignment,
        file_size=sum(h.file_size for h in headers),
        value_types=value_types,
        infos_end=first.infos_end,
    )
