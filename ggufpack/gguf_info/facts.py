"""Facts about a GGUF model from its header, and gguf-packer's per-model image-config entry.

What gguf-packer (gpustack/gguf-packer-go, ``buildkit/frontend/specs/v1/image.go``) stores in an
image config, under ``config``: ``Size`` (uint64, bytes of all GGUF files), ``Model``, ``Drafter``,
``Projector`` (objects), ``Adapters`` (list), ``Cmd`` (list of str), ``Labels`` (str → str), all
``omitempty``. Each model object is Go's ``GGUFFile`` struct, serialized by ``encoding/json``
(no custom marshalers, so every scalar is a plain JSON number)::

    {"GGUF": <gguf-parser-go GGUFFile>,
     "Architecture": str (omitempty), "Parameters": uint64, "BitsPerWeight": float64,
     "FileType": uint32 (llama.cpp's llama_ftype number, omitempty: absent means 0 = ALL_F32),
     "CmdParameterValue": str (omitempty), "CmdParameterIndex": int (omitempty)}

gguf-packer fills ``GGUF`` with the output of ``gguf-parser --raw``, which always reads with
``SkipLargeMetadata``, so *every* metadata array lacks its items. The gguf-parser-go ``GGUFFile``
JSON (v0.12) is::

    {"header": {"magic": 1179993927, "version": 3, "tensorCount": N, "metadataKVCount": N,
                "metadataKV": [{"key": str, "valueType": int, "value": <scalar | array object>}]},
     "tensorInfos": [{"name": str, "nDimensions": int, "dimensions": [int], "type": int (ggml type),
                      "offset": int, "startOffset": int}],
     "padding": int, "tensorDataStartOffset": int, "size": int (file bytes), "modelSize": int,
     "modelParameters": int, "modelBitsPerWeight": float,
     "splitPaddings", "splitTensorDataStartOffsets", "splitSizes", "splitModelSizes": [int] (omitempty)}

An array value is ``{"type": int (item type), "len": int, "array": [...] (omitempty),
"startOffset": int, "size": int (bytes of the items)}``; gguf-parser-go sizes the tokenizer from
``size``. Split sets: the counts add up, ``metadataKV`` is every shard's list minus ``split.no``,
``tensorInfos`` are concatenated, the ``split*`` lists hold one item per shard, and ``padding`` and
``tensorDataStartOffset`` stay 0.

Where ggufpack differs, on purpose: arrays of up to :data:`INLINE_ARRAY_ITEMS` items keep their
items (per-layer hyperparameters matter to ``estimate``); ``modelSize`` and ``BitsPerWeight`` use
the sum of the tensors' sizes rather than "file size minus data offset", so they stay right for a
stored header without its data; ``padding`` is the real padding (gguf-parser-go writes the alignment
when none is needed); tensor ``startOffset`` is not recorded; non-finite floats are written as the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` so that the config stays valid JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from gguf.constants import (
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
    Keys,
    LlamaFileType,
    PoolingType,
)

from ggufpack.errors import GGUFPackError, clipped, shown
from ggufpack.gguf_info.header import (
    ElidedArray,
    ElidedString,
    GGUFArray,
    GGUFHeader,
    TensorInfo,
    checked_tensor_info,
    merge_headers,
)

INLINE_ARRAY_ITEMS = 128
"""Metadata arrays longer than this are written to the image config without their items."""
INLINE_STRING_BYTES = 256 << 10
"""Metadata strings longer than this (UTF-8 bytes) are written to the image config as their length only:
chat templates (tens of KiB) stay, a 100 MB ``general.description`` does not make a config that no
registry, and not our own pull, accepts. What reads a model's own strings (``run``) reads the GGUF."""

ENCODER_ARCHITECTURES = frozenset(
    {
        "bert",
        "eurobert",
        "gemma-embedding",
        "jina-bert-v2",
        "jina-bert-v3",
        "llama-embed",
        "modern-bert",
        "neo-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "t5encoder",
    }
)
"""llama.cpp architectures that are (non-causal) embedding encoders whatever their metadata says."""

_CONTROL_VECTOR_HINT = "controlvector.model_hint"
_NUMBER_UNITS = ((1e15, "Q"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))

Headers: TypeAlias = "GGUFHeader | Sequence[GGUFHeader]"


@dataclass(frozen=True)
class ModelFacts:
    """What ``list``, ``inspect`` and the labels say about one model (a file or a split set)."""

    architecture: str
    """``general.architecture`` (a control vector's ``controlvector.model_hint``); ``""`` if absent."""
    parameters: int
    """Elements of all tensors."""
    model_bytes: int
    """Bytes of all tensors."""
    bits_per_weight: float
    file_type: str
    """llama.cpp's name (``Q4_K_M``), declared or inferred; ``""`` when neither is possible."""
    file_type_id: int | None
    """llama.cpp's ``llama_ftype`` number behind ``file_type``."""
    usage: str
    """``text-to-text``, ``embedding``, ``reranking``, ``adapter`` or ``projector``."""


def as_header(headers: Headers) -> GGUFHeader:
    """One header for a file or a split set (merged)."""
    return headers if isinstance(headers, GGUFHeader) else merge_headers(headers)


def _string_kv(header: GGUFHeader, key: str) -> str:
    value = header.metadata.get(key)
    return value.strip() if isinstance(value, str) else ""


def _int_kv(header: GGUFHeader, key: str) -> int | None:
    value = header.metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def architecture(header: GGUFHeader) -> str:
    return _string_kv(header, _CONTROL_VECTOR_HINT) or _string_kv(header, Keys.General.ARCHITECTURE)


def file_type_name(ftype: int) -> str | None:
    """llama.cpp's name of a ``general.file_type`` value: ``15`` → ``Q4_K_M``; ``None`` if unknown."""
    try:
        member = LlamaFileType(ftype & ~LlamaFileType.GUESSED)
    except ValueError:
        return None
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _ftype_for(ggml_type: GGMLQuantizationType, counts: Counter[GGMLQuantizationType]) -> LlamaFileType | None:
    """The llama.cpp file type whose dominant weight type is ``ggml_type``, telling mixes apart by
    the other types present (Q4_K with some Q6_K is Q4_K_M), the way gguf-parser-go guesses."""
    t = GGMLQuantizationType
    name = f"MOSTLY_{ggml_type.name}"
    if ggml_type == t.F32:
        name = "ALL_F32"
    elif ggml_type == t.MXFP4:
        name = "MOSTLY_MXFP4_MOE"
    elif ggml_type == t.Q3_K:
        large = counts[t.Q8_0] or (counts[t.Q5_K] > 1 and not counts[t.Q4_K])
        name = "MOSTLY_Q3_K_L" if large else "MOSTLY_Q3_K_M" if counts[t.Q4_K] > 1 else "MOSTLY_Q3_K_S"
    elif ggml_type == t.Q4_K:
        name = "MOSTLY_Q4_K_M" if counts[t.Q6_K] > 1 else "MOSTLY_Q3_K_M" if counts[t.Q3_K] > 1 else "MOSTLY_Q4_K_S"
    elif ggml_type == t.Q5_K:
        name = "MOSTLY_Q5_K_M" if counts[t.Q6_K] > 1 else "MOSTLY_Q5_K_S"
    elif ggml_type == t.IQ2_XS:
        name = "MOSTLY_IQ2_S" if counts[t.IQ4_XS] > 1 else "MOSTLY_IQ2_XS"
    elif ggml_type == t.IQ2_S:
        name = "MOSTLY_IQ2_M"
    elif ggml_type == t.IQ3_S:
        name = "MOSTLY_IQ3_XS" if counts[t.IQ3_XXS] > 1 else "MOSTLY_IQ3_S"
    return LlamaFileType.__members__.get(name)


def infer_file_type(tensors: Sequence[TensorInfo]) -> LlamaFileType | None:
    """Guess the file type from the most common type among 2-D (or larger) ``.weight`` tensors.

    F32 wins only when nothing else is there (norms and small biases are F32 in every file).
    """
    counts = Counter(t.ggml_type for t in tensors if len(t.shape) >= 2 and t.name.endswith(".weight"))
    if not counts:
        return None
    ranked = sorted(counts, key=lambda k: (-counts[k], k.value))
    dominant = ranked[1] if ranked[0] == GGMLQuantizationType.F32 and len(ranked) > 1 else ranked[0]
    return _ftype_for(dominant, counts)


def file_type(header: GGUFHeader) -> tuple[str, int | None]:
    """``(name, llama_ftype number)``: declared by ``general.file_type`` if known, else inferred."""
    declared = _int_kv(header, Keys.General.FILE_TYPE)
    if declared is not None:
        name = file_type_name(declared)
        if name is not None:
            return name, declared & ~LlamaFileType.GUESSED
    inferred = infer_file_type(header.tensors)
    if inferred is None:
        return "", None
    return file_type_name(inferred) or "", int(inferred)


def usage(header: GGUFHeader) -> str:
    """What the model is for, from its metadata: adapters, projectors, encoders, generators."""
    general_type = _string_kv(header, Keys.General.TYPE)
    if general_type == "adapter" or _CONTROL_VECTOR_HINT in header.metadata:
        return "adapter"
    arch = architecture(header)
    if arch == "clip" or general_type == "mmproj":
        return "projector"
    pooling = _int_kv(header, Keys.LLM.POOLING_TYPE.format(arch=arch))
    if pooling == PoolingType.RANK:
        return "reranking"
    causal = header.metadata.get(Keys.Attention.CAUSAL.format(arch=arch))
    if arch in ENCODER_ARCHITECTURES or causal is False or (pooling is not None and pooling != PoolingType.NONE):
        return "embedding"
    return "text-to-text"


def model_facts(headers: Headers) -> ModelFacts:
    """Facts about a model: one header, or the headers of every shard of a split set."""
    header = as_header(headers)
    parameters = sum(t.n_elements for t in header.tensors)
    model_bytes = header.tensor_bytes
    name, ftype = file_type(header)
    return ModelFacts(
        architecture=architecture(header),
        parameters=parameters,
        model_bytes=model_bytes,
        bits_per_weight=model_bytes * 8 / parameters if parameters else 0.0,
        file_type=name,
        file_type_id=ftype,
        usage=usage(header),
    )


def _two_decimals(x: float) -> str:
    return f"{x:.2f}".removesuffix(".00")


def format_parameters(n: int) -> str:
    """``494_030_000`` → ``494.03 M`` (K, M, B, T, Q; ``.00`` dropped), as gguf-packer prints."""
    for base, unit in _NUMBER_UNITS:
        if n >= base:
            return f"{_two_decimals(n / base)} {unit}"
    return str(n)


def format_bpw(bpw: float) -> str:
    """``6.7123`` → ``6.71 bpw``."""
    return f"{bpw:.2f} bpw" if bpw > 0 else "0 bpw"


# --- gguf-packer's image-config entry ---------------------------------------------------------


_FLOAT_TYPES = (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64)
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _encode_value(value: Any, vtype: GGUFValueType) -> Any:
    if vtype == GGUFValueType.ARRAY:
        obj: dict[str, Any] = {"type": int(value.item_type), "len": len(value)}
        if isinstance(value, GGUFArray) and len(value) <= INLINE_ARRAY_ITEMS:
            obj["array"] = [_encode_value(v, value.item_type) for v in value]
        obj["startOffset"] = value.offset
        obj["size"] = value.nbytes
        return obj
    if vtype in _FLOAT_TYPES:
        return _encode_float(value)
    if vtype == GGUFValueType.STRING and isinstance(value, str) and len(value) > INLINE_STRING_BYTES // 4:
        nbytes = len(value.encode())
        if nbytes > INLINE_STRING_BYTES:
            return {"size": nbytes}
    return value


def _gguf_json(headers: Sequence[GGUFHeader]) -> dict[str, Any]:
    kvs = [
        {"key": key, "valueType": int(h.value_types[key]), "value": _encode_value(value, h.value_types[key])}
        for h in headers
        for key, value in h.metadata.items()
        if not (len(headers) > 1 and key == Keys.Split.LLM_KV_SPLIT_NO)
    ]
    tensors = [t for h in headers for t in h.tensors]
    parameters = sum(t.n_elements for t in tensors)
    model_bytes = sum(t.n_bytes for t in tensors)
    single = len(headers) == 1
    gguf: dict[str, Any] = {
        "header": {
            "magic": GGUF_MAGIC,
            "version": headers[0].version,
            "tensorCount": len(tensors),
            "metadataKVCount": len(kvs),
            "metadataKV": kvs,
        },
        "tensorInfos": [
            {
                "name": t.name,
                "nDimensions": len(t.shape),
                "dimensions": list(t.shape),
                "type": int(t.ggml_type),
                "offset": t.offset,
            }
            for t in tensors
        ],
        "padding": headers[0].data_offset - headers[0].infos_end if single else 0,
        "tensorDataStartOffset": headers[0].data_offset if single else 0,
        "size": sum(h.file_size for h in headers),
        "modelSize": model_bytes,
        "modelParameters": parameters,
        "modelBitsPerWeight": model_bytes * 8 / parameters if parameters else 0.0,
    }
    if not single:
        gguf["splitPaddings"] = [h.data_offset - h.infos_end for h in headers]
        gguf["splitTensorDataStartOffsets"] = [h.data_offset for h in headers]
        gguf["splitSizes"] = [h.file_size for h in headers]
        gguf["splitModelSizes"] = [h.tensor_bytes for h in headers]
    return gguf


def model_config_entry(headers: Headers, *, cmd_value: str, cmd_index: int) -> dict[str, Any]:
    """gguf-packer's per-model config object (``Model``, ``Drafter``, ``Projector``, ``Adapters[i]``).

    ``cmd_value`` is the path as written in CMD (``-m <cmd_value>``), ``cmd_index`` its index in CMD.
    """
    shards = [headers] if isinstance(headers, GGUFHeader) else list(headers)
    facts = model_facts(shards)
    entry: dict[str, Any] = {"GGUF": _gguf_json(shards)}
    if facts.architecture:
        entry["Architecture"] = facts.architecture
    entry["Parameters"] = facts.parameters
    entry["BitsPerWeight"] = facts.bits_per_weight
    if facts.file_type_id is not None:
        entry["FileType"] = facts.file_type_id
    entry["CmdParameterValue"] = cmd_value
    entry["CmdParameterIndex"] = cmd_index
    return entry


def _decode_value(raw: Any, vtype: GGUFValueType, depth: int = 0) -> Any:
    if vtype == GGUFValueType.ARRAY:
        if depth > 8 or not isinstance(raw, Mapping):
            raise ValueError(f"bad array value {shown(raw)}")
        item_type = GGUFValueType(raw["type"])
        offset, nbytes = int(raw.get("startOffset", 0)), int(raw.get("size", 0))
        items = raw.get("array")
        if items is None:
            return ElidedArray(item_type, int(raw["len"]), offset=offset, nbytes=nbytes)
        decoded = [_decode_value(v, item_type, depth + 1) for v in items]
        return GGUFArray(decoded, item_type, offset=offset, nbytes=nbytes)
    if vtype in _FLOAT_TYPES:
        return _NON_FINITE[raw] if isinstance(raw, str) else float(raw)
    if vtype == GGUFValueType.STRING and isinstance(raw, Mapping):
        return ElidedString(int(raw["size"]))
    expected: type = {GGUFValueType.STRING: str, GGUFValueType.BOOL: bool}.get(vtype, int)
    if not isinstance(raw, expected) or (expected is int and isinstance(raw, bool)):
        raise ValueError(f"value {shown(raw)} is not of GGUF type {vtype.name}")
    return raw


def header_from_config_entry(entry: Mapping[str, Any]) -> GGUFHeader:
    """Rebuild a header from a config entry (ours or gguf-packer's), so no weights are needed.

    Arrays stored without items come back as :class:`ElidedArray`, strings stored as their size as
    :class:`ElidedString`. A split set comes back as one merged header, as
    :func:`~ggufpack.gguf_info.header.merge_headers` would make it.
    """
    try:
        gguf = entry["GGUF"]
        head = gguf["header"]
        metadata: dict[str, Any] = {}
        value_types: dict[str, GGUFValueType] = {}
        for kv in head.get("metadataKV") or ():
            key, vtype = str(kv["key"]), GGUFValueType(kv["valueType"])
            if key not in metadata:
                metadata[key] = _decode_value(kv["value"], vtype)
                value_types[key] = vtype
        tensors = [
            checked_tensor_info(str(t["name"]), [int(d) for d in t["dimensions"]], int(t["type"]), int(t["offset"]))
            for t in gguf.get("tensorInfos") or ()
        ]
        data_offset = int(gguf.get("tensorDataStartOffset") or (gguf.get("splitTensorDataStartOffsets") or [0])[0])
        padding = int(gguf.get("padding") or (gguf.get("splitPaddings") or [0])[0])
        alignment = metadata.get(Keys.General.ALIGNMENT, 32)
        return GGUFHeader(
            version=int(head["version"]),
            metadata=metadata,
            tensors=tensors,
            data_offset=data_offset,
            alignment=int(alignment),
            file_size=int(gguf["size"]),
            value_types=value_types,
            infos_end=data_offset - padding,
        )
    except GGUFPackError as e:
        raise GGUFPackError(f"malformed GGUF entry in image config: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:  # not shaped as specified
        raise GGUFPackError(f"malformed GGUF entry in image config: {type(e).__name__}: {clipped(str(e))}") from None
