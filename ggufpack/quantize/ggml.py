"""The few ggml and libllama C functions ggufpack calls directly, from the libraries llama-cpp-python loaded.

llama-cpp-python binds llama.h but not most of ggml.h; the type table and the importance-matrix
collector need ggml's own answers (type names, block sizes, a tensor's bytes), so they are bound
here once, with their C signatures.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

#: ggml.h: GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME
MAX_DIMS, MAX_SRC, MAX_OP_PARAMS, MAX_NAME = 4, 10, 64, 64


class GGMLTensor(ctypes.Structure):
    """``struct ggml_tensor`` of ggml.h (read-only use: the eval callback inspects graph nodes)."""


GGMLTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * MAX_DIMS),
    ("nb", ctypes.c_size_t * MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * MAX_SRC),
    ("view_src", ctypes.POINTER(GGMLTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "ggml_type_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ggml_blck_size": (ctypes.c_int64, [ctypes.c_int]),
    "ggml_is_quantized": (ctypes.c_bool, [ctypes.c_int]),
    "ggml_op_name": (ctypes.c_char_p, [ctypes.c_int]),
    "ggml_nbytes": (ctypes.c_size_t, [ctypes.POINTER(GGMLTensor)]),
    "ggml_backend_tensor_get": (None, [ctypes.POINTER(GGMLTensor), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]),
}


@cache
def lib() -> Any:
    """libggml-base as llama-cpp-python loaded it, with the signatures above set."""
    import llama_cpp._ggml as ggml_module

    handle = ggml_module.libggml
    for name, (restype, argtypes) in _SIGNATURES.items():
        func = getattr(handle, name)
        func.restype, func.argtypes = restype, argtypes
    return handle


@cache
def type_count() -> int:
    import llama_cpp

    return int(llama_cpp.GGML_TYPE_COUNT)


@cache
def type_names() -> dict[int, str]:
    """ggml type id → upper-case name, for every type this ggml still has (removed ids have block size 0)."""
    ggml = lib()
    return {t: ggml.ggml_type_name(t).decode().upper() for t in range(type_count()) if ggml.ggml_blck_size(t) > 0}


@cache
def op_name(op: int) -> str:
    return str(lib().ggml_op_name(op).decode())


@cache
def default_type_function() -> Any:
    """libllama's ``llama_ftype_get_default_type`` (C++ linkage, from ``llama-ext.h``), or None if absent."""
    import llama_cpp

    try:
        func = llama_cpp.llama_cpp._lib._Z28llama_ftype_get_default_type11llama_ftype
    except AttributeError:
        return None
    func.argtypes, func.restype = [ctypes.c_int], ctypes.c_int
    return func
