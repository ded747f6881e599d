"""llama.cpp's quantization types, as the installed llama.cpp (llama-cpp-python's) offers them.

The file types are the ``LLAMA_FTYPE_*`` constants of the installed llama-cpp-python bindings
(they mirror its ``llama.h``), less those its quantizer cannot produce: each is asked to
``llama_ftype_get_default_type`` of the loaded library, exactly the check ``llama_model_quantize``
starts with (an ftype without a default tensor type, such as ``NVFP4`` in llama.cpp b8xxx, is
refused there). That is the list ``llama-quantize --help`` prints, plus its aliases and ``COPY``.

The table is built on first use, so that ``ggufpack plan`` and ``--help`` never load llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ..options.quant_names import ALIASES as _ALIASES
from ..options.quant_names import DEFAULT_QUANTIZE_TYPE as DEFAULT_QUANTIZE_TYPE
from ..options.quant_names import normalize_quantize_type as normalize_quantize_type
from ..options.quant_names import normalize_tensor_type as normalize_tensor_type

#: ggml types ``ggml_quantize_chunk`` cannot write (integer and F64 types, and the Q8_1/Q8_K
#: intermediate types of dot products): naming one as a tensor's target would abort llama.cpp,
#: which in-process means this Python process
_NOT_TARGET_TYPES = frozenset({"I8", "I16", "I32", "I64", "F64", "Q8_1", "Q8_K"})

#: file types whose main tensors llama.cpp makes with a type it refuses to make without an importance
#: matrix (``tensor_requires_imatrix`` in ``src/llama-quant.cpp``: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS,
#: IQ2_S, IQ3_XXS, and Q2_K inside a Q2_K_S file). IQ2_S and IQ2_M files are mostly IQ2_XS/IQ2_S;
#: IQ3_XS makes attn_q/attn_k IQ3_XXS. llama.cpp decides per tensor (an all-covering --tensor-type
#: can lift the need), so the quantizers rely on its own check; this set documents it for the table.
IMATRIX_REQUIRED = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"})


@dataclass(frozen=True)
class QuantType:
    """One row of the type table."""

    name: str
    ftype: int | None  # llama_ftype; None for COPY (every tensor keeps its type)
    default_tensor_type: str | None  # the ggml type most tensors get (None for COPY)
    needs_imatrix: bool


@cache
def type_table() -> dict[str, QuantType]:
    """Canonical type name → :class:`QuantType`, in ``llama_ftype`` order, COPY last."""
    import llama_cpp

    from . import ggml

    names = ggml.type_names()
    default_type = ggml.default_type_function()
    rows: list[QuantType] = []
    for attr in dir(llama_cpp):
        if not attr.startswith("LLAMA_FTYPE_") or attr == "LLAMA_FTYPE_GUESSED":
            continue
        ftype = int(getattr(llama_cpp, attr))
        name = attr.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
        tensor_type = default_type(ftype) if default_type is not None else None
        if tensor_type is not None and tensor_type not in names:
            continue  # this llama.cpp cannot make that file type
        rows.append(QuantType(name, ftype, names.get(tensor_type) if tensor_type is not None else None,
                              name in IMATRIX_REQUIRED))
    rows.sort(key=lambda row: row.ftype or 0)
    rows.append(QuantType("COPY", None, None, False))
    return {row.name: row for row in rows}


@cache
def tensor_types() -> dict[str, int]:
    """ggml type name → id, for the types a tensor can be quantized or converted to."""
    from . import ggml

    return {name: t for t, name in ggml.type_names().items() if name not in _NOT_TARGET_TYPES}


def __getattr__(name: str) -> Any:
    # QUANTIZE_TYPES (canonical name → llama_ftype, None for COPY) is computed on first access
    if name == "QUANTIZE_TYPES":
        return {row.name: row.ftype for row in type_table().values()}
    raise AttributeError(name)


def aliases() -> dict[str, str]:
    """``llama-quantize``'s alias names and the types they stand for."""
    return dict(_ALIASES)
