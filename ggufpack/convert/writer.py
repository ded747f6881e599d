"""Streaming GGUF output: header, key/values and tensor infos first, then data tensor by tensor.

Each tensor's size is known from its shape and output type before any data is read, so the tensor
infos are written up front; then the tensors are produced (loaded from a memory map, converted,
encoded) by worker threads a few tensors ahead of the main thread, which writes them in order. At
most ``workers + 1`` tensors are in flight, so peak memory is a few times the largest tensor, never
the model, and the file is byte for byte what a serial write gives.

Where the output type allows it, a tensor skips float32 altogether: F16, BF16 and F32 outputs of a
checkpoint stored in that type are copied as they are, and bf16 weights become F16 by re-biasing
their exponent (exact wherever float16 is normal; a 65536-entry table of every bf16 value's float16
rounding covers the rest), about six times faster than widening to float32 and rounding that.

The output (every shard of a split one) is written into a temporary directory beside ``dest`` and
renamed into place only when complete, the first shard last, so a failure never leaves a partial
GGUF or a partial set of shards where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor
from ggufpack.convert.files import malformed
from ggufpack.convert.safetensors import bf16_to_f32
from ggufpack.errors import GGUFPackError, shown
from ggufpack.progress import QUIET, Progress
from ggufpack.util.fsutil import fsync_dir

Q = gguf.GGMLQuantizationType
T = gguf.MODEL_TENSOR

# Output type name → (GGML type of the big tensors, general.file_type).
OUT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "TQ1_0": (Q.TQ1_0, gguf.LlamaFileType.MOSTLY_TQ1_0),
    "TQ2_0": (Q.TQ2_0, gguf.LlamaFileType.MOSTLY_TQ2_0),
}
AUTO = "AUTO"
_TERNARY = (Q.TQ1_0, Q.TQ2_0)


def _names(*tensors: gguf.MODEL_TENSOR) -> re.Pattern[str]:
    """A pattern matching the ``.weight`` of these GGUF tensors in any block."""
    parts = [re.escape(gguf.TENSOR_NAMES[t]).replace(re.escape("{bid}"), r"\d+") for t in tensors]
    return re.compile(rf"({'|'.join(parts)})\.weight")


# As llama.cpp's convert_hf_to_gguf.py: 2-D tensors its kernels only take in F32 (MoE routers, learned
# positions, BERT's token types), and the tensors it keeps in F16 for ternary outputs (the embeddings and
# the output head: ternary values would wreck them; its quantizer makes them Q4_K/Q6_K, which numpy cannot).
_KEEP_F32 = _names(T.FFN_GATE_INP, T.FFN_GATE_INP_SHEXP, T.POS_EMBD, T.TOKEN_TYPES)
_TERNARY_KEEP_F16 = _names(T.TOKEN_EMBD, T.PER_LAYER_TOKEN_EMBD, T.OUTPUT)
_QUANTIZABLE_SUFFIXES = (".weight", ".lora_a", ".lora_b")


def resolve_out_type(out_type: str, tensors: list[PlannedTensor]) -> str:
    """Validate ``out_type``; AUTO keeps the source precision: BF16 for bf16 weights, else F16."""
    name = out_type.upper()
    if name == AUTO:
        return "BF16" if any(t.source_dtype == "BF16" and len(t.shape) > 1 for t in tensors) else "F16"
    if name not in OUT_TYPES:
        raise GGUFPackError(f"unknown output type {shown(out_type)}; choose one of {', '.join([*OUT_TYPES, AUTO])}")
    return name


def tensor_type(tensor: PlannedTensor, out_type: str, warnings: list[str]) -> gguf.GGMLQuantizationType:
    """The GGML type of one tensor, chosen as llama.cpp's converter chooses it.

    1-D tensors, norms, non-weights and :data:`_KEEP_F32` stay F32; ternary outputs keep the
    embeddings and output head in F16; a row size the type's block does not divide falls back to F16.
    """
    name = tensor.name
    if (len(tensor.shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(_QUANTIZABLE_SUFFIXES)
            or _KEEP_F32.fullmatch(name)):
        return Q.F32
    qtype = OUT_TYPES[out_type][0]
    if qtype in _TERNARY and _TERNARY_KEEP_F16.fullmatch(name):
        return Q.F16
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if tensor.shape[-1] % block:
        warnings.append(f"{name}: row size {tensor.shape[-1]} is not a multiple of {block}; kept F16")
        return Q.F16
    return qtype


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> tuple[tuple[int, ...], int]:
    """The stored (byte-)shape and byte count of a tensor of ``shape`` in ``qtype``."""
    if qtype in (Q.F32, Q.F16):
        return shape, math.prod(shape) * (4 if qtype == Q.F32 else 2)
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, math.prod(byte_shape)


# --- encoding --------------------------------------------------------------------------------------


@cache
def _bf16_to_f16_table() -> np.ndarray:
    """The float16 bits of every bfloat16 value, rounded as numpy rounds float32 (bf16 → f32 is exact)."""
    with np.errstate(over="ignore"):  # bf16 beyond float16's range becomes inf, as the float32 path gives
        return bf16_to_f32(np.arange(1 << 16, dtype=np.uint16)).astype(np.float16).view(np.uint16)


_CHUNK = 1 << 18  # values per pass: 512 KiB of uint16, so the passes below run in the cache
_F16_NORMAL = (113 << 7, 143 << 7)  # bf16 magnitude bits whose exponent is in float16's normal range


def _bf16_to_f16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits → float16, exactly what rounding the float32 value gives; 2.5x faster than a table lookup.

    In float16's normal range (2^-14 <= |x| < 2^16) a bf16's 7 mantissa bits fit in float16's 10, so
    converting only re-biases the exponent: ``((bits & 0x7fff) - (112 << 7)) << 3`` plus the sign. The
    values outside it (zeros, float16 subnormals, overflow, inf, nan: ~0.3% of typical weights) are
    looked up in :func:`_bf16_to_f16_table`.
    """
    table = _bf16_to_f16_table()
    flat = np.ascontiguousarray(bits).reshape(-1)
    out = np.empty_like(flat)
    scratch, outside = np.empty(min(flat.size, _CHUNK), np.uint16), np.empty(min(flat.size, _CHUNK), bool)
    low, high = _F16_NORMAL
    for start in range(0, flat.size, _CHUNK):
        src, dst = flat[start:start + _CHUNK], out[start:start + _CHUNK]
        mag, bad = scratch[: src.size], outside[: src.size]
        np.bitwise_and(src, 0x7FFF, out=mag)
        np.subtract(mag, np.uint16(112 << 7), out=dst)
        np.left_shift(dst, 3, out=dst)
        np.subtract(mag, np.uint16(low), out=mag)  # wraps below low: one comparison tests both ends
        np.greater_equal(mag, np.uint16(high - low), out=bad)
        np.bitwise_and(src, 0x8000, out=mag)
        np.bitwise_or(dst, mag, out=dst)
        where = np.flatnonzero(bad)
        dst[where] = table[src[where]]
    return out.reshape(bits.shape).view(np.float16)


# (stored dtype, output type) → how to encode the stored values directly; other pairs go through float32.
_FROM_STORED: dict[tuple[str, gguf.GGMLQuantizationType], Callable[[np.ndarray], np.ndarray]] = {
    ("F32", Q.F32): np.ascontiguousarray,
    ("F16", Q.F16): np.ascontiguousarray,
    ("BF16", Q.BF16): np.ascontiguousarray,
    ("BF16", Q.F16): _bf16_to_f16,
    ("BF16", Q.F32): bf16_to_f32,
    ("F16", Q.F32): lambda data: data.astype(np.float32),
    ("F32", Q.F16): lambda data: data.astype(np.float16),
}


def _checked(tensor: PlannedTensor, data: np.ndarray) -> np.ndarray:
    if tuple(data.shape) != tensor.shape:
        raise GGUFPackError(f"tensor {tensor.name}: produced shape {data.shape}, planned {tensor.shape}")
    return data


def _encode(tensor: PlannedTensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """``tensor``'s data in ``qtype``, contiguous, ready to write; from its stored values where possible."""
    direct = _FROM_STORED.get((tensor.source_dtype, qtype))
    if direct is not None and tensor.load_stored is not None:
        return direct(_checked(tensor, tensor.load_stored()))
    data = np.ascontiguousarray(_checked(tensor, tensor.load()), dtype=np.float32)
    return np.ascontiguousarray(gguf.quants.quantize(data, qtype))


def _in_order(jobs: Sequence[Callable[[], np.ndarray]], workers: int) -> Iterator[np.ndarray]:
    """The jobs' results in order, computed by ``workers`` threads at most ``workers`` jobs ahead.

    numpy releases the GIL in its conversions and writes, so producing the next tensors overlaps writing
    this one. ``workers=0`` runs everything in the caller's thread.
    """
    if workers == 0:
        yield from (job() for job in jobs)
        return
    pending: deque[Future[np.ndarray]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="ggufpack-convert") as pool:
        try:
            for job in jobs:
                pending.append(pool.submit(job))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # on an error (here or in the consumer): start nothing more; the pool waits for running jobs
            for future in pending:
                future.cancel()


def _default_workers() -> int:
    """Two producers, beside the writing thread, keep two cores busy; each one more holds one more tensor."""
    return min(2, os.cpu_count() or 1)


# --- files -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenFile:
    path: Path  # the file to load: the only one, or the first shard
    paths: tuple[Path, ...]  # every file written, shards in order
    size: int  # bytes, all shards together
    tensor_count: int
    parameter_count: int


def check_metadata(writer: gguf.GGUFWriter) -> None:
    """Pack every key/value once before any file is opened: a value GGUF cannot hold (a config number out of
    its type's range, a lone surrogate in a token, a wrong type) is our error naming the key, not a
    traceback halfway through writing."""
    for key, kv in writer.kv_data[0].items():
        with malformed(f"cannot store {key} = {shown(kv.value)} as GGUF {kv.type.name}: malformed source files"):
            writer._pack_val(kv.value, kv.type, add_vtype=True, sub_type=kv.sub_type)


def write_gguf(
    writer: gguf.GGUFWriter, tensors: list[PlannedTensor], types: list[gguf.GGMLQuantizationType], dest: Path,
    progress: Progress = QUIET, split_max_size: int | None = None, workers: int | None = None,
) -> WrittenFile:
    """Write ``writer``'s key/values and ``tensors`` (each in its type from ``types``) to ``dest``.

    ``split_max_size`` (bytes of tensor data per file) splits the output into shards named as llama.cpp's
    ``gguf-split`` names them (``NAME-00001-of-00003.gguf``), with the ``split.*`` keys its loader reads; a
    tensor is never cut, so a tensor larger than the limit gets a shard of its own. A model that fits
    is written unsplit, to ``dest``. ``workers`` threads produce tensors ahead of the writes (0: serial).
    """
    if split_max_size is not None:
        if split_max_size <= 0:
            raise GGUFPackError(f"--split-max-size must be a positive number of bytes, not {split_max_size}")
        writer.split_max_size = split_max_size
    total = 0
    for tensor, qtype in zip(tensors, types, strict=True):
        stored_shape, nbytes = _nbytes(tensor.shape, qtype)
        dtype = np.float32 if qtype == Q.F32 else np.float16 if qtype == Q.F16 else np.uint8
        writer.add_tensor_info(tensor.name, stored_shape, np.dtype(dtype), nbytes, raw_dtype=qtype)
        total += nbytes

    dest = Path(dest)
    final = writer.format_shard_names(dest)
    taken = next((p for p in final if p.is_dir()), None)
    if taken is not None:
        raise GGUFPackError(f"{taken} is a directory: give the path of the GGUF file to write, inside it or elsewhere")
    jobs = [lambda t=tensor, q=qtype: _encode(t, q) for tensor, qtype in zip(tensors, types, strict=True)]
    try:
        _write_staged(writer, jobs, dest, final, total, progress, _default_workers() if workers is None else workers)
    except OSError as e:  # unwritable directory, disk full...: the output's fault, never the source's (see TensorRef)
        raise GGUFPackError(f"cannot write {dest}: {e}") from e
    return WrittenFile(path=final[0], paths=tuple(final), size=sum(p.stat().st_size for p in final),
                       tensor_count=len(tensors), parameter_count=sum(math.prod(t.shape) for t in tensors))


def _write_staged(writer: gguf.GGUFWriter, jobs: list[Callable[[], np.ndarray]], dest: Path, final: list[Path],
                  total: int, progress: Progress, workers: int) -> None:
    """Write every file into a temporary directory beside ``dest``, then publish them as ``final``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        writer.write_header_to_file(path=staging / dest.name)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with progress.bar(f"convert {dest.name}", total) as bar, \
                contextlib.closing(_in_order(jobs, workers)) as encoded:
            for data in encoded:
                writer.write_tensor_data(data)
                bar.update(data.nbytes)
                del data
        writer.close()
        _publish([staging / p.name for p in final], final)
    finally:
        writer.close()
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staged: list[Path], final: list[Path]) -> None:
    """fsync the staged files and rename them into place, the first (the one llama.cpp opens) last.

    A rename that fails takes back the ones already made, so no partial set of shards is left.
    """
    for path in staged:
        with path.open("rb+") as f:
            os.fsync(f.fileno())
    done: list[Path] = []
    try:
        for src, dst in reversed(list(zip(staged, final, strict=True))):
            os.replace(src, dst)
            done.append(dst)
    except BaseException:
        for path in done:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    fsync_dir(final[0].parent)
