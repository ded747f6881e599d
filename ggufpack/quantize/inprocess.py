"""Quantization in this process through llama-cpp-python's ``llama_model_quantize``.

This is the default backend: llama-cpp-python is always installed, so QUANTIZE works on any
machine without a separate llama.cpp build.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GGUFPackError, UsageError
from .types import QUANTIZE_TYPES, normalize_quantize_type

#: types llama.cpp refuses to make without an importance matrix
IMATRIX_REQUIRED = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S"})


@dataclass(frozen=True)
class QuantizeOptions:
    """The knobs of ``llama-quantize`` that the in-process backend honours."""

    type: str = "Q5_K_M"
    pure: bool = False
    allow_requantize: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    keep_split: bool = False
    imatrix: Path | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    tensor_types: tuple[tuple[str, str], ...] = ()
    override_kv: tuple[str, ...] = field(default=())
    threads: int = 0


def _unsupported(options: QuantizeOptions) -> list[str]:
    names = []
    if options.imatrix is not None:
        names.append("--imatrix")
    if options.include_weights or options.exclude_weights:
        names.append("--include-weights/--exclude-weights")
    if options.tensor_types:
        names.append("--tensor-type")
    if options.override_kv:
        names.append("--override-kv")
    return names


def llama_cpp_version() -> str:
    """The llama-cpp-python version (part of QUANTIZE cache keys: another llama.cpp, other bytes)."""
    import llama_cpp

    return str(llama_cpp.__version__)


def quantize(source: Path, dest: Path, options: QuantizeOptions) -> None:
    """Quantize ``source`` into ``dest`` (written in place; the caller renames it into the store)."""
    qtype = normalize_quantize_type(options.type)
    if qtype is None:
        raise UsageError(f"{options.type!r} is not a llama.cpp quantization type")
    unsupported = _unsupported(options)
    if unsupported:
        raise GGUFPackError(
            f"{', '.join(unsupported)} are not supported by the in-process quantizer yet; "
            "they arrive with the llama.cpp backends (issue #5)"
        )
    if qtype in IMATRIX_REQUIRED and options.imatrix is None:
        raise UsageError(f"{qtype} needs an importance matrix: make one with IMATRIX and pass --imatrix=<file>")

    import llama_cpp
    from gguf import GGMLQuantizationType

    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = options.threads or os.cpu_count() or 1
    ftype = QUANTIZE_TYPES[qtype]
    if ftype is None:  # COPY: keep every tensor as it is
        params.only_copy = True
    else:
        params.ftype = ftype
    params.allow_requantize = options.allow_requantize
    params.quantize_output_tensor = not options.leave_output_tensor
    params.pure = options.pure
    params.keep_split = options.keep_split
    if options.output_tensor_type:
        params.output_tensor_type = int(GGMLQuantizationType[options.output_tensor_type])
    if options.token_embedding_type:
        params.token_embedding_type = int(GGMLQuantizationType[options.token_embedding_type])
    with _captured_llama_log() as log:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), llama_cpp.byref(params))
    if status != 0 or not dest.exists():
        tail = "".join(log[-5:]).strip()
        raise GGUFPackError(
            f"llama.cpp could not quantize {source.name} to {qtype} (status {status}); "
            f"is it a GGUF model that is not already quantized? (--allow-requantize requantizes)\n{tail}"
        )


_LOG_LOCK = threading.Lock()


@contextmanager
def _captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines instead of letting them flood stderr (kept for error messages)."""
    import llama_cpp

    lines: list[str] = []

    def sink(_level: int, text: bytes, _user: object) -> None:
        lines.append(text.decode("utf-8", "replace"))

    callback = llama_cpp.llama_log_callback(sink)
    with _LOG_LOCK:
        llama_cpp.llama_log_set(callback, None)
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(llama_cpp.llama_log_callback(0), None)
