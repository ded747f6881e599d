"""A small, strict reader of safetensors files, numpy only.

Format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON mapping tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the byte after the
header) plus an optional ``__metadata__`` object, then the data. Nothing is read until a tensor is
asked for, and then only through a read-only memory map, so reading never costs the model's size
in memory. Every offset is checked against the file size and the tensor's shape before use: a
truncated file or a lying header is an error naming the tensor, not a crash or garbage weights.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from ggufpack.convert.files import open_regular, parse_json
from ggufpack.errors import GGUFPackError, shown

# safetensors dtype name -> numpy dtype of the stored bytes
_STORED_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # no numpy bfloat16: read the bits, widen to f32 on load
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit
MAX_DIMS = 8
"""Most dimensions of one tensor (checkpoints hold at most 3 or 4; numpy maps at most 32)."""


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives; ``load()`` maps it without copying the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    def raw(self) -> np.ndarray:
        """The stored values as a read-only memory map (bf16 as its uint16 bits)."""
        stored = _STORED_DTYPES[self.dtype]
        if self.n_elements == 0:
            return np.zeros(self.shape, dtype=stored)
        try:
            return np.memmap(self.path, dtype=stored, mode="r", offset=self.offset, shape=self.shape)
        except (OSError, ValueError) as e:
            raise GGUFPackError(f"{self.path.name}: cannot read tensor {shown(self.name)}: {e}") from e

    def load_f32(self) -> np.ndarray:
        """The tensor widened to float32 (exact for F16 and BF16)."""
        if self.dtype not in FLOAT_DTYPES:
            raise GGUFPackError(f"{self.path.name}: tensor {shown(self.name)} has non-float dtype {self.dtype}")
        data = self.raw()
        return bf16_to_f32(data) if self.dtype == "BF16" else data.astype(np.float32)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values (as their uint16 bits) widened to float32, exactly: bf16 is a float32's top half."""
    wide = bits.astype(np.uint32)
    wide <<= 16
    return wide.view(np.float32)


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse and validate the header of one safetensors file: its tensors (``__metadata__`` is not needed)."""
    with open_regular(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise GGUFPackError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            # the claimed length is the file's first 8 bytes: never echo it (the file may be anything)
            if header_len > _MAX_HEADER or 8 + header_len > size:
                raise GGUFPackError(
                    f"{path}: not a safetensors file: its first 8 bytes give no possible header length "
                    f"(at most {_MAX_HEADER} bytes and within the file's {size}); the file is truncated or is "
                    "something else"
                )
            header_bytes = f.read(header_len)
        except OSError as e:
            raise GGUFPackError(f"cannot read {path}: {e.strerror or e}") from e
    header = parse_json(header_bytes, f"{path}: safetensors header")
    if not isinstance(header, dict):
        raise GGUFPackError(f"{path}: safetensors header is not a JSON object")

    data_start = 8 + header_len
    data_size = size - data_start
    header.pop("__metadata__", None)
    tensors: dict[str, TensorRef] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        ref = _tensor_ref(path, name, entry, data_start, data_size)
        tensors[name] = ref
        spans.append((ref.offset, ref.offset + ref.nbytes, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in pairwise(spans):
        if begin_b < end_a:
            raise GGUFPackError(f"{path}: safetensors header is corrupt: tensors {shown(a)} and {shown(b)} overlap")
    return tensors


def _tensor_ref(path: Path, name: str, entry: object, data_start: int, data_size: int) -> TensorRef:
    if not isinstance(entry, dict):
        raise GGUFPackError(f"{path}: tensor {shown(name)}: header entry is not an object")
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _STORED_DTYPES:
        raise GGUFPackError(
            f"{path}: tensor {shown(name)} has unsupported dtype {shown(dtype)} "
            f"(supported: {', '.join(sorted(_STORED_DTYPES))})"
        )
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise GGUFPackError(f"{path}: tensor {shown(name)} has an invalid shape {shown(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise GGUFPackError(f"{path}: tensor {shown(name)} has invalid data_offsets {shown(offsets)}")
    begin, end = offsets
    expected = math.prod(shape) * _STORED_DTYPES[dtype].itemsize
    if begin < 0 or end < begin or end - begin != expected:
        raise GGUFPackError(
            f"{path}: tensor {shown(name)}: data_offsets {shown(offsets)} hold {shown(end - begin)} bytes, "
            f"but {dtype} {shown(shape)} needs {shown(expected)}: the header is corrupt"
        )
    if end > data_size:
        raise GGUFPackError(
            f"{path}: tensor {shown(name)} ends at byte {shown(end)} of the data, but the file holds only {data_size}: "
            "the file is truncated (re-download or re-save it)"
        )
    return TensorRef(name=name, dtype=dtype, shape=tuple(shape), path=path, offset=data_start + begin,
                     nbytes=expected)
