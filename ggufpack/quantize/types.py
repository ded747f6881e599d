"""llama.cpp's quantization type names, as ``llama-quantize`` accepts them.

The table is data taken from the ``gguf`` package's ``LlamaFileType`` (which mirrors llama.cpp's
``llama_ftype``), plus the aliases and the ``COPY`` pseudo-type that ``llama-quantize`` accepts, so a
newer ``gguf`` release brings its new types without a code change here.
"""

from __future__ import annotations

from gguf import GGMLQuantizationType, LlamaFileType

DEFAULT_QUANTIZE_TYPE = "Q5_K_M"

#: names ``llama-quantize`` accepts that are not ``llama_ftype`` member names
_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def _ftype_name(member: LlamaFileType) -> str:
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


#: canonical name → llama_ftype value (COPY keeps every tensor's type: no ftype of its own)
QUANTIZE_TYPES: dict[str, int | None] = {
    _ftype_name(member): int(member) for member in LlamaFileType if member.name != "GUESSED"
}
QUANTIZE_TYPES["COPY"] = None


def normalize_quantize_type(name: str) -> str | None:
    """The canonical type name for ``name`` (case-insensitive, aliases resolved), or None if unknown."""
    upper = name.strip().upper()
    upper = _ALIASES.get(upper, upper)
    return upper if upper in QUANTIZE_TYPES else None


def normalize_tensor_type(name: str) -> str | None:
    """A ggml tensor type name (``q8_0``, ``F16``...) in canonical upper case, or None if unknown."""
    upper = name.strip().upper()
    return upper if upper in GGMLQuantizationType.__members__ else None
