"""Streaming GGUF output: header, key/values and tensor infos first, then data tensor by tensor.

Each tensor's size is known from its shape and output type before any data is read, so the tensor
infos are written up front and each tensor is then loaded (from a memory map), converted, written
and dropped: peak memory is a few times the largest tensor, never the model. The file is written
under a temporary name in the destination directory and renamed into place only when complete, so
a failure never leaves a partial GGUF where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor
from ggufpack.errors import GGUFPackError
from ggufpack.progress import QUIET, Progress

Q = gguf.GGMLQuantizationType

# Output type name → (GGML type of the big tensors, general.file_type).
OUT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "F32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "F16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "BF16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "Q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
AUTO = "AUTO"


def resolve_out_type(out_type: str, tensors: list[PlannedTensor]) -> str:
    """Validate ``out_type``; AUTO keeps the source precision: BF16 for bf16 weights, else F16."""
    name = out_type.upper()
    if name == AUTO:
        return "BF16" if any(t.source_dtype == "BF16" and len(t.shape) > 1 for t in tensors) else "F16"
    if name not in OUT_TYPES:
        raise GGUFPackError(f"unknown output type {out_type!r}; choose one of {', '.join([*OUT_TYPES, AUTO])}")
    return name


def tensor_type(tensor: PlannedTensor, out_type: str, warnings: list[str]) -> gguf.GGMLQuantizationType:
    """The GGML type of one tensor: llama.cpp keeps 1-D tensors, norms and non-weights in F32."""
    if len(tensor.shape) <= 1 or tensor.name.endswith("_norm.weight") or not tensor.name.endswith(".weight"):
        return Q.F32
    qtype = OUT_TYPES[out_type][0]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if tensor.shape[-1] % block:
        warnings.append(f"{tensor.name}: row size {tensor.shape[-1]} is not a multiple of {block}; kept F16")
        return Q.F16
    return qtype


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> tuple[tuple[int, ...], int]:
    """The stored (byte-)shape and byte count of a tensor of ``shape`` in ``qtype``."""
    if qtype in (Q.F32, Q.F16):
        return shape, math.prod(shape) * (4 if qtype == Q.F32 else 2)
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, math.prod(byte_shape)


def _encode(data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    return np.ascontiguousarray(gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype))


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    size: int
    tensor_count: int
    parameter_count: int


def write_gguf(
    writer: gguf.GGUFWriter, tensors: list[PlannedTensor], types: list[gguf.GGMLQuantizationType], dest: Path,
    progress: Progress = QUIET, split_max_size: int | None = None,
) -> WrittenFile:
    """Write ``writer``'s key/values and ``tensors`` (each in its type from ``types``) to ``dest``."""
    if split_max_size is not None:
        raise GGUFPackError("--split-max-size is not supported yet (issue #4)")
    total = 0
    for tensor, qtype in zip(tensors, types, strict=True):
        stored_shape, nbytes = _nbytes(tensor.shape, qtype)
        dtype = np.float32 if qtype == Q.F32 else np.float16 if qtype == Q.F16 else np.uint8
        writer.add_tensor_info(tensor.name, stored_shape, np.dtype(dtype), nbytes, raw_dtype=qtype)
        total += nbytes

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with progress.bar(f"convert {dest.name}", total) as bar:
            for tensor, qtype in zip(tensors, types, strict=True):
                data = tensor.load()
                if tuple(data.shape) != tensor.shape:
                    raise GGUFPackError(f"tensor {tensor.name}: produced shape {data.shape}, planned {tensor.shape}")
                encoded = _encode(data, qtype)
                del data
                writer.write_tensor_data(encoded)
                bar.update(encoded.nbytes)
        writer.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        writer.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return WrittenFile(path=dest, size=dest.stat().st_size, tensor_count=len(tensors),
                       parameter_count=sum(math.prod(t.shape) for t in tensors))
