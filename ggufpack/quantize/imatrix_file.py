"""Importance-matrix files: read both formats llama.cpp knows, write the GGUF one.

- GGUF (what ``llama-imatrix`` writes now): per weight ``<name>.in_sum2`` (F32, ``ne0 x n_mat``: the
  sums of squared activations per input column, per expert) and ``<name>.counts`` (F32, ``1 x
  n_mat``: how many activation rows were summed), with ``general.type = imatrix``,
  ``imatrix.datasets`` (string array), ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (u32).
- legacy ``.dat``: ``int32 n``, then per entry ``int32 len, name, int32 ncall, int32 nval, float[nval]``
  holding ``sum/count*ncall``, then optionally ``int32 chunks, int32 len, dataset``.

:func:`quantize_weights` turns either into what ``llama-quantize`` hands to llama.cpp: per weight,
the mean squared activation per column (``tools/quantize/quantize.cpp``: ``load_imatrix`` and
``prepare_imatrix``), in float32 as it computes it, filtered by ``--include/--exclude-weights``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GGUFPackError

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUMS_SUFFIX = ".in_sum2"
COUNTS_SUFFIX = ".counts"


@dataclass
class ImatrixEntry:
    sums: np.ndarray  # float32, (n_mat, ne0)
    counts: np.ndarray  # int64, (n_mat,)


@dataclass
class Imatrix:
    entries: dict[str, ImatrixEntry] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False
    has_metadata: bool = False


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def load_imatrix(path: Path) -> Imatrix:
    """Read an importance matrix in either format; a :class:`GGUFPackError` if it is neither."""
    path = Path(path)
    try:
        return _load_gguf(path) if _is_gguf(path) else _load_legacy(path)
    except OSError as exc:
        raise GGUFPackError(f"cannot read the importance matrix {path}: {exc.strerror or exc}") from None


def _load_gguf(path: Path) -> Imatrix:
    from gguf import GGMLQuantizationType, GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, struct.error) as exc:
        raise GGUFPackError(f"{path} is not a readable GGUF importance matrix ({exc})") from None
    out = Imatrix()
    fields = reader.fields
    if KEY_DATASETS in fields:
        out.datasets = [str(v) for v in fields[KEY_DATASETS].contents()]
    for key, attr in ((KEY_CHUNK_COUNT, "chunk_count"), (KEY_CHUNK_SIZE, "chunk_size")):
        if key in fields:
            setattr(out, attr, int(fields[key].contents()))
    out.has_metadata = all(k in fields for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        for suffix, into in ((SUMS_SUFFIX, sums), (COUNTS_SUFFIX, counts)):
            if tensor.name.endswith(suffix):
                if tensor.tensor_type != GGMLQuantizationType.F32:
                    raise GGUFPackError(f"{path}: {tensor.name} must be F32")
                into[tensor.name.removesuffix(suffix)] = np.asarray(tensor.data, dtype=np.float32)
    if not sums and not counts:
        raise GGUFPackError(f"{path}: no importance matrix entries (is it an imatrix GGUF?)")
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise GGUFPackError(f"{path}: mismatched sums and counts for {name}")
        n_mat = counts[name].size
        out.entries[name] = ImatrixEntry(sums[name].reshape(n_mat, -1), np.rint(counts[name].ravel()).astype(np.int64))
    return out


def _load_legacy(path: Path) -> Imatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise GGUFPackError(f"{path} is neither a GGUF nor a legacy .dat importance matrix (truncated at {pos})")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise GGUFPackError(f"{path}: no importance matrix entries")
    out = Imatrix(is_legacy=True)
    for _ in range(n_entries):
        (length,) = take("<i")
        if length < 0 or pos + length > len(data):
            raise GGUFPackError(f"{path} is neither a GGUF nor a legacy .dat importance matrix (bad name length)")
        name = data[pos:pos + length].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1 or pos + 4 * nval > len(data):
            raise GGUFPackError(f"{path}: bad number of values for {name}")
        sums = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        out.entries[name] = ImatrixEntry(sums.reshape(1, -1), np.array([ncall], dtype=np.int64))
    if pos + 4 <= len(data):
        (out.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0 and pos + length <= len(data):
                out.datasets.append(data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", "replace"))
    return out


def quantize_weights(imatrix: Imatrix, include: Iterable[str] = (),
                     exclude: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Per weight name, the float32 importance values ``llama-quantize`` passes to llama.cpp.

    GGUF: ``sums / count`` per expert (1.0 where an expert saw nothing); legacy: ``sums / ncall``.
    Then entries whose name contains an ``exclude`` string are dropped, or only those containing an
    ``include`` string are kept (substring matches, as the tool does).
    """
    if not imatrix.is_legacy and not imatrix.has_metadata:
        raise GGUFPackError("the importance matrix has no imatrix.* metadata (llama-quantize refuses it too)")
    values: dict[str, np.ndarray] = {}
    for name, entry in imatrix.entries.items():
        if imatrix.is_legacy:
            ncall = int(entry.counts[0]) if entry.counts.size else 0
            row = entry.sums / np.float32(ncall) if ncall > 0 else entry.sums
        else:
            counts = entry.counts.astype(np.float32)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                row = np.where(counts > 0, entry.sums / np.where(counts > 0, counts, 1), np.float32(1))
        values[name] = np.ascontiguousarray(row, dtype=np.float32).ravel()
    exclude, include = tuple(exclude), tuple(include)
    if exclude:
        values = {k: v for k, v in values.items() if not any(s in k for s in exclude)}
    if include:
        values = {k: v for k, v in values.items() if any(s in k for s in include)}
    return values


def write_imatrix(path: Path, imatrix: Imatrix) -> None:
    """Write ``imatrix`` in the GGUF layout ``llama-imatrix`` uses (entries sorted by name)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch="")
    # llama-imatrix writes no general.architecture; GGUFWriter always adds one: drop it.
    writer.kv_data[0].pop("general.architecture", None)
    writer.add_string("general.type", "imatrix")
    writer.add_array(KEY_DATASETS, list(imatrix.datasets))
    writer.add_uint32(KEY_CHUNK_COUNT, imatrix.chunk_count)
    writer.add_uint32(KEY_CHUNK_SIZE, imatrix.chunk_size)
    for name in sorted(imatrix.entries, key=lambda n: n.encode()):
        entry = imatrix.entries[name]
        n_mat = entry.counts.size
        # like ggml, no trailing dimensions of 1
        sums = entry.sums.astype(np.float32).reshape(n_mat, -1) if n_mat > 1 else entry.sums.astype(np.float32).ravel()
        writer.add_tensor(name + SUMS_SUFFIX, np.ascontiguousarray(sums))
        counts = entry.counts.astype(np.float32)
        writer.add_tensor(name + COUNTS_SUFFIX, counts.reshape(n_mat, 1) if n_mat > 1 else counts)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
