"""llama.cpp's quantization file types and ggml tensor types, by name (data, checked against llama.cpp).

``FILE_TYPES`` is what ``llama-quantize --help`` offers (``llama_ftype`` names the installed
llama.cpp can make, in its order, plus ``COPY``); ``TENSOR_TYPES`` the ggml types a tensor can be
quantized or converted to. :mod:`ggufpack.quantize.types` derives the same lists from the loaded
library; ``tests/test_quantize_types.py`` fails when the two differ, so a llama.cpp upgrade that adds
or drops a type updates this table in the same change.
"""

from __future__ import annotations

DEFAULT_QUANTIZE_TYPE = "Q5_K_M"

FILE_TYPES = (
    "F32", "F16", "Q4_0", "Q4_1", "Q8_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
    "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS", "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
    "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M", "IQ4_XS", "IQ1_M", "BF16", "TQ1_0", "TQ2_0", "MXFP4_MOE", "Q1_0", "Q2_0",
    "COPY",
)

TENSOR_TYPES = frozenset({
    "BF16", "F16", "F32", "IQ1_M", "IQ1_S", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ3_S", "IQ3_XXS", "IQ4_NL", "IQ4_XS",
    "MXFP4", "NVFP4", "Q1_0", "Q2_0", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0",
    "TQ1_0", "TQ2_0",
})

#: names ``llama-quantize`` accepts that are not ``llama_ftype`` member names
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

_FILE_TYPE_SET = frozenset(FILE_TYPES)


def normalize_quantize_type(name: str) -> str | None:
    """The canonical file type name for ``name`` (case-insensitive, aliases resolved), or None if unknown."""
    upper = name.strip().upper()
    upper = ALIASES.get(upper, upper)
    return upper if upper in _FILE_TYPE_SET else None


def normalize_tensor_type(name: str) -> str | None:
    """A ggml tensor type name (``q8_0``, ``F16``...) in canonical upper case, or None if unknown."""
    upper = name.strip().upper()
    return upper if upper in TENSOR_TYPES else None
