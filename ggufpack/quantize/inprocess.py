"""Quantization in this process through llama-cpp-python's ``llama_model_quantize``.

This is the default backend: llama-cpp-python is always installed, so QUANTIZE works on any
machine without a separate llama.cpp build. The parameters are filled the way ``llama-quantize``
(``tools/quantize/quantize.cpp``) fills them for the same options: the importance matrix is read and
filtered as the tool does and passed as a null-terminated ``llama_model_imatrix_data`` array, its
provenance recorded through ``quantize.imatrix.*`` key overrides after the user's own, and
``--tensor-type`` patterns go lower-cased into ``tt_overrides``. Every ctypes buffer the parameters
point into is kept referenced until the call returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import GGUFPackError, UsageError
from ..gguf_info import shards_named_after
from ..options.quantize import KvOverride, QuantizeOptions, parse_override_kv
from .imatrix_file import load_imatrix, quantize_weights
from .types import tensor_types, type_table

KEY_IMATRIX_FILE = "quantize.imatrix.file"
KEY_IMATRIX_DATASET = "quantize.imatrix.dataset"
KEY_IMATRIX_ENTRIES = "quantize.imatrix.entries_count"
KEY_IMATRIX_CHUNKS = "quantize.imatrix.chunks_count"
#: what llama.cpp's log says when a tensor's type needs an importance matrix and none was given
_NEEDS_IMATRIX = ("requires an imatrix", "Missing importance matrix")


def _kv_array(overrides: list[KvOverride]) -> Any:
    """A ``llama_model_kv_override`` array terminated by an empty key."""
    import llama_cpp

    array = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()
    tags = {"int": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, "float": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT,
            "bool": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL, "str": llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR}
    for slot, kv in zip(array, overrides, strict=False):
        slot.key = kv.key.encode()
        slot.tag = tags[kv.kind]
        if kv.kind == "int":
            slot.value.val_i64 = int(kv.value)
        elif kv.kind == "float":
            slot.value.val_f64 = float(kv.value)
        elif kv.kind == "bool":
            slot.value.val_bool = bool(kv.value)
        else:
            slot.value.val_str = str(kv.value).encode()[:127]
    return array


def _imatrix_array(values: dict[str, Any], keep: list[Any]) -> Any:
    """A ``llama_model_imatrix_data`` array terminated by a null name; buffers go into ``keep``."""
    import ctypes

    import llama_cpp

    array = (llama_cpp.llama_model_imatrix_data * (len(values) + 1))()
    for slot, (name, data) in zip(array, values.items(), strict=False):
        name_buf = ctypes.create_string_buffer(name.encode())
        keep.extend([name_buf, data])
        slot.name = ctypes.cast(name_buf, ctypes.c_char_p)
        slot.data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        slot.size = data.size
    return array


def _tensor_type_array(options: QuantizeOptions, keep: list[Any]) -> Any:
    """A ``llama_model_tensor_override`` array terminated by a null pattern."""
    import ctypes

    import llama_cpp

    ids = tensor_types()
    array = (llama_cpp.llama_model_tensor_override * (len(options.tensor_types) + 1))()
    for slot, (pattern, type_name) in zip(array, options.tensor_types, strict=False):
        buf = ctypes.create_string_buffer(pattern.lower().encode())
        keep.append(buf)
        slot.pattern = ctypes.cast(buf, ctypes.c_char_p)
        slot.type = ids[type_name.upper()]
    array[len(options.tensor_types)].type = llama_cpp.GGML_TYPE_COUNT
    return array


def _imatrix_overrides(options: QuantizeOptions, keep: list[Any]) -> tuple[Any, list[KvOverride]]:
    """The imatrix array for llama.cpp (None when no entry is left) and the provenance keys the tool adds."""
    if options.imatrix is None:
        return None, []
    imatrix = load_imatrix(options.imatrix)
    values = quantize_weights(imatrix, options.include_weights, options.exclude_weights)
    if not values:
        return None, []
    kvs = [KvOverride(KEY_IMATRIX_FILE, "str", options.recorded_imatrix_name()[:127])]
    if imatrix.datasets:
        kvs.append(KvOverride(KEY_IMATRIX_DATASET, "str", imatrix.datasets[0][:127]))
    kvs.append(KvOverride(KEY_IMATRIX_ENTRIES, "int", len(values)))
    if imatrix.chunk_count > 0:
        kvs.append(KvOverride(KEY_IMATRIX_CHUNKS, "int", imatrix.chunk_count))
    return _imatrix_array(values, keep), kvs


def quantize(source: Path, dest: Path, options: QuantizeOptions) -> list[Path]:
    """Quantize ``source`` into ``dest`` (with ``--keep-split``: into its shards); returns the files written.

    A :class:`UsageError` for bad options or a type that needs an importance matrix none was given
    for, a :class:`GGUFPackError` when llama.cpp fails; no output file is left behind either way.
    """
    import llama_cpp

    options = options.validated()
    qtype = options.type
    row = type_table()[qtype]
    ids = tensor_types()
    keep: list[Any] = []
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = options.threads or os.cpu_count() or 1
    if row.ftype is None:  # COPY: keep every tensor as it is
        params.only_copy = True
        params.ftype = 0
    else:
        params.ftype = row.ftype
    params.allow_requantize = options.allow_requantize
    params.quantize_output_tensor = not options.leave_output_tensor
    params.pure = options.pure
    params.keep_split = options.keep_split
    if options.output_tensor_type:
        params.output_tensor_type = ids[options.output_tensor_type.upper()]
    if options.token_embedding_type:
        params.token_embedding_type = ids[options.token_embedding_type.upper()]
    imatrix_array, provenance = _imatrix_overrides(options, keep)
    if imatrix_array is not None:
        params.imatrix = imatrix_array
    kvs = [parse_override_kv(spec) for spec in options.override_kv] + provenance
    if kvs:
        kv_array = _kv_array(kvs)
        keep.append(kv_array)
        params.kv_overrides = kv_array
    if options.tensor_types:
        tt_array = _tensor_type_array(options, keep)
        keep.append(tt_array)
        params.tt_overrides = tt_array
    target = Path(str(dest)[: -len(".gguf")]) if options.keep_split and str(dest).endswith(".gguf") else dest
    with captured_llama_log() as log:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), llama_cpp.byref(params))
    del keep  # the buffers above had to outlive the call
    written = output_files(dest, options.keep_split)
    if status != 0 or not written:
        for path in written:
            path.unlink(missing_ok=True)
        raise quantize_failure(source.name, qtype, "".join(log))
    return written


def output_files(dest: Path, keep_split: bool) -> list[Path]:
    """The files a quantization to ``dest`` wrote (``--keep-split``: the shards llama.cpp names after it)."""
    if not keep_split:
        return [dest] if dest.exists() else []
    return shards_named_after(dest)  # llama.cpp names them <dest less .gguf>-NNNNN-of-NNNNN.gguf


def quantize_failure(source_name: str, qtype: str, log: str) -> GGUFPackError:
    """The error for a failed quantization, from llama.cpp's log (the in-process log or the tool's output)."""
    if any(marker in log for marker in _NEEDS_IMATRIX):
        tensor = next((line.split(":", 1)[1].strip() for line in log.splitlines() if "offending tensor" in line), None)
        where = f" (tensor {tensor})" if tensor else ""
        return UsageError(
            f"{qtype} needs an importance matrix{where}: make one with IMATRIX (or ggufpack imatrix) and pass "
            "--imatrix=<file>"
        )
    tail = "\n".join(line for line in log.strip().splitlines()[-6:])
    return GGUFPackError(
        f"llama.cpp could not quantize {source_name} to {qtype}; is it a GGUF model that is not already quantized? "
        f"(--allow-requantize requantizes)\n{tail}"
    )


_LOG_LOCK = threading.Lock()


@contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines instead of letting them flood stderr (kept for error messages).

    Afterwards llama-cpp-python's own logger (which honours ``verbose=``) is put back.
    """
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    def sink(_level: int, text: bytes, _user: object) -> None:
        lines.append(text.decode("utf-8", "replace"))

    callback = llama_cpp.llama_log_callback(sink)
    with _LOG_LOCK:
        llama_cpp.llama_log_set(callback, None)
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(_logger.llama_log_callback, None)
