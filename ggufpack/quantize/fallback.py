"""Quantization with numpy alone (the ``numpy`` backend): no llama.cpp needed.

File types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, TQ1_0, TQ2_0 and BF16 of an F32/F16/BF16 GGUF. The
blocks are encoded by the ``gguf`` package's quants (ports of ggml's reference quantizers), and
everything around them follows llama.cpp's ``llama_model_quantize`` (``src/llama-quant.cpp``), so
that the output is the file llama.cpp writes, byte for byte:

- which tensors are quantized (2-D/3-D ``*.weight``, minus norms, routers and the other small
  tensors llama.cpp lists) and to what: the file type's tensor type, except the output head (and
  the token embeddings when the head is tied to them) → Q6_K, or Q8_0 when its rows do not split
  into blocks; TQ1_0/TQ2_0 token embeddings → Q4_K; attn_v/attn_k → Q8_0 in 8-expert models; and
  a type whose block does not divide the row length falls back as llama.cpp's does (to Q4_0, Q5_0,
  Q8_0 or F16);
- the layout: key/values copied in order with ``general.quantization_version`` and
  ``general.file_type`` moved to the end, tensors ordered by block number then name, the input's
  alignment.

Q6_K and Q4_K have no numpy encoder, so where llama.cpp's rules ask for them (the output head of a
model whose width is a multiple of 256; ternary token embeddings) this quantizer refuses and says
which option (``--output-tensor-type``, ``--token-embedding-type``, ``--pure``) or backend avoids them.
It takes the same :class:`~ggufpack.options.quantize.QuantizeOptions` as llama.cpp and refuses by name
those whose declaration says the numpy quantizer does not honour them (``numpy=False``).
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ..errors import GGUFPackError, UsageError
from ..options.quantize import QuantizeOptions
from ..progress import QUIET, Progress

Q = gguf.GGMLQuantizationType
#: file type name → (its tensor type, its ``general.file_type``)
FTYPES: dict[str, tuple[Q, gguf.LlamaFileType]] = {
    name: (Q[name], gguf.LlamaFileType[f"MOSTLY_{name}"])
    for name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "TQ1_0", "TQ2_0", "BF16")
}
_SOURCE_TYPES = (Q.F32, Q.F16, Q.BF16)
#: tensor types the gguf package can encode (F32/F16 are plain casts)
_ENCODABLE = frozenset({Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.TQ1_0, Q.TQ2_0, Q.MXFP4})
#: the fallbacks of llama.cpp's ``tensor_type_fallback`` (block-32 types have none: they become F16)
_SHAPE_FALLBACK = {Q.TQ1_0: Q.Q4_0, Q.TQ2_0: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}

# Tensors llama.cpp never quantizes (``tensor_allows_quantization``), by substring of the name.
_KEEP_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
    ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
    *(f"time_mix_{part}.weight" for part in ("first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1",
                                             "g2", "decay_w1", "decay_w2", "lerp_fused")),
)
_KEEP_EXACT = ("position_embd.weight", "token_types.weight")
_GLM5_NEXT_KEEP = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                   "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
                   "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight")
_GLM5_NEXT_Q8 = ("attn_q_a", "attn_q_b", "nextn.eh_proj")
_TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")
_OUTPUT = "output.weight"
_BLOCK = re.compile(r"blk\.(-?\d+)\.")
_SKIP_KEYS = ("general.quantization_version", "general.file_type", "split.no", "split.count", "split.tensors.count")


@dataclass(frozen=True)
class _Model:
    arch: str
    n_expert: int
    tied: bool  # no output.weight: the token embeddings double as the output head


def _dims(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    """ggml's ``ne`` without trailing 1s (``ggml_n_dims``), which is what llama.cpp writes back."""
    ne = [int(n) for n in tensor.shape]
    while len(ne) > 1 and ne[-1] == 1:
        ne.pop()
    return tuple(ne)


def _allows_quantization(name: str, ndims: int, model: _Model, options: QuantizeOptions) -> bool:
    if ndims < 2 or not name.endswith("weight") or name in _KEEP_EXACT:
        return False
    if options.leave_output_tensor and name == _OUTPUT:
        return False
    if model.arch == "glm5-next" and any(s in name for s in _GLM5_NEXT_KEEP):
        return False
    return not any(s in name for s in _KEEP_SUBSTRINGS)


def _mix_type(name: str, ncols: int, qtype: Q, ftype: str, model: _Model, options: QuantizeOptions) -> Q:
    """llama.cpp's per-tensor choice for these file types (``llama_tensor_get_type_impl``)."""
    if model.arch == "glm5-next" and any(s in name for s in _GLM5_NEXT_Q8):
        return Q.Q8_0
    if name == _OUTPUT or (model.tied and name in _TOKEN_EMBD):
        if options.output_tensor_type:
            return Q[options.output_tensor_type]
        if model.arch == "falcon" or ncols % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
            return Q.Q8_0
        return qtype if qtype == Q.Q8_0 else Q.Q6_K
    if name in _TOKEN_EMBD:
        if options.token_embedding_type:
            return Q[options.token_embedding_type]
        return Q.Q4_K if ftype in ("TQ1_0", "TQ2_0") else qtype
    if model.n_expert == 8 and any(s in name for s in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight",
                                                         "attn_k.weight")):
        return Q.Q8_0
    return qtype


def _shape_fallback(ncols: int, qtype: Q) -> Q:
    """``tensor_type_fallback``: a type whose block does not divide the row length is replaced."""
    if ncols % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    fallback = _SHAPE_FALLBACK.get(qtype, qtype)
    return fallback if ncols % gguf.GGML_QUANT_SIZES[fallback][0] == 0 else Q.F16


def _is_quantized(qtype: Q) -> bool:
    return qtype not in (Q.F32, Q.F16, Q.BF16, Q.I8, Q.I16, Q.I32, Q.I64, Q.F64)


def target_type(tensor: gguf.ReaderTensor, ftype: str, model: _Model, options: QuantizeOptions) -> Q:
    """The type llama.cpp gives ``tensor`` in a file of type ``ftype`` (``llama_tensor_get_type``)."""
    name, ne = tensor.name, _dims(tensor)
    source = Q(int(tensor.tensor_type))
    if not _allows_quantization(name, len(ne), model, options):
        return source
    if options.token_embedding_type and name in _TOKEN_EMBD:
        return Q[options.token_embedding_type]
    if options.output_tensor_type and name == _OUTPUT:
        return Q[options.output_tensor_type]
    qtype = FTYPES[ftype][0]
    if not _is_quantized(qtype):
        return qtype
    if not options.pure:
        qtype = _mix_type(name, ne[0], qtype, ftype, model, options)
    return _shape_fallback(ne[0], qtype)


def _order(tensors: Iterable[gguf.ReaderTensor]) -> list[gguf.ReaderTensor]:
    """llama.cpp's ``weights_map`` order: by block number (-1 outside blocks), then by name."""

    def key(t: gguf.ReaderTensor) -> tuple[int, bytes]:
        match = _BLOCK.match(t.name)
        return (int(match.group(1)) if match else -1, t.name.encode())

    return sorted(tensors, key=key)


def _field_value(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _model(reader: gguf.GGUFReader) -> _Model:
    arch = str(_field_value(reader, "general.architecture") or "")
    n_expert = _field_value(reader, f"{arch}.expert_count")
    return _Model(arch=arch, n_expert=int(n_expert or 0), tied=all(t.name != _OUTPUT for t in reader.tensors))


def _check_options(options: QuantizeOptions) -> QuantizeOptions:
    """The options validated, refused where this quantizer does not honour them (``numpy=False`` in their
    declaration: they need llama.cpp) or cannot make the types they ask for."""
    options = options.validated()
    refused = options.unsupported_by_numpy()
    if refused:
        raise UsageError(f"the numpy backend does not support {', '.join(refused)}: use a llama.cpp backend")
    if options.type not in FTYPES:
        raise UsageError(f"the numpy quantizer makes {', '.join(FTYPES)}, not {options.type!r}; "
                         "use a llama.cpp backend (--backend llama-cpp-python) for other types")
    for flag, value in (("--output-tensor-type", options.output_tensor_type),
                        ("--token-embedding-type", options.token_embedding_type)):
        if value is not None and (value not in Q.__members__ or Q[value] not in _ENCODABLE):
            raise UsageError(f"{flag} {value}: the numpy quantizer encodes only "
                             f"{', '.join(sorted(t.name for t in _ENCODABLE))}")
    return options


def plan(source: Path, options: QuantizeOptions) -> list[tuple[str, Q]]:
    """(tensor name, output type) in output order, as llama.cpp would choose them."""
    options = _check_options(options)
    ftype = options.type
    reader = gguf.GGUFReader(source)
    model = _model(reader)
    return [(t.name, target_type(t, ftype, model, options)) for t in _order(reader.tensors)]


def _kv_bytes(reader: gguf.GGUFReader) -> list[bytes]:
    """The input's key/values, encoded exactly as read (llama.cpp copies them as they are)."""
    out = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in _SKIP_KEYS:
            continue
        out.append(b"".join(bytes(part.tobytes()) for part in field.parts))
    return out


def _u32_kv(key: str, value: int) -> bytes:
    raw = key.encode()
    return struct.pack("<Q", len(raw)) + raw + struct.pack("<II", gguf.GGUFValueType.UINT32, value)


def _nbytes(ne: tuple[int, ...], qtype: Q) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(ne[1:], dtype=np.int64)) * (ne[0] // block) * size


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _as_f32(tensor: gguf.ReaderTensor, ne: tuple[int, ...]) -> np.ndarray:
    source = Q(int(tensor.tensor_type))
    raw = np.asarray(tensor.data)
    if source == Q.BF16:
        data = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        data = raw.astype(np.float32)
    return data.reshape(-1, ne[0])


def _encode(tensor: gguf.ReaderTensor, ne: tuple[int, ...], qtype: Q) -> bytes:
    if Q(int(tensor.tensor_type)) == qtype:
        return bytes(np.asarray(tensor.data).tobytes())
    rows = _as_f32(tensor, ne)
    if qtype == Q.F32:
        return rows.tobytes()
    if qtype == Q.F16:
        return rows.astype(np.float16).tobytes()
    return bytes(gguf.quants.quantize(rows, qtype).tobytes())


def _check_source(reader: gguf.GGUFReader, source: Path) -> None:
    if reader.byte_order != "I":
        raise GGUFPackError(f"{source.name} is a big-endian GGUF; the numpy quantizer reads little-endian files only")
    if int(_field_value(reader, "split.count") or 1) > 1:
        raise GGUFPackError(f"{source.name} is one shard of a split GGUF; merge it (llama-gguf-split --merge) or "
                            "quantize it with a llama.cpp backend")
    for t in reader.tensors:
        if Q(int(t.tensor_type)) not in _SOURCE_TYPES:
            raise GGUFPackError(f"{source.name}: tensor {t.name} is {Q(int(t.tensor_type)).name}; the numpy quantizer "
                                "reads F32/F16/BF16 models only (requantizing needs a llama.cpp backend)")


def _check_encodable(types: list[tuple[str, Q]], ftype: str) -> None:
    for name, qtype in types:
        if qtype not in _ENCODABLE:
            hint = "--token-embedding-type" if name in _TOKEN_EMBD else "--output-tensor-type"
            raise GGUFPackError(
                f"for {ftype}, llama.cpp makes {name} {qtype.name}, which the numpy quantizer cannot encode; pass "
                f"{hint}=Q8_0 (or --pure), or use a llama.cpp backend (--backend llama-cpp-python)"
            )


def quantize(source: Path, dest: Path, options: QuantizeOptions, progress: Progress = QUIET) -> list[tuple[str, Q]]:
    """Write ``source`` quantized to ``options.type`` at ``dest`` (complete or not at all); the tensor types."""
    options = _check_options(options)
    ftype = options.type
    reader = gguf.GGUFReader(source)
    _check_source(reader, source)
    model = _model(reader)
    tensors = _order(reader.tensors)
    types = [target_type(t, ftype, model, options) for t in tensors]
    _check_encodable([(t.name, q) for t, q in zip(tensors, types, strict=True)], ftype)

    align = int(reader.alignment)
    kvs = [*_kv_bytes(reader), _u32_kv("general.quantization_version", gguf.GGML_QUANT_VERSION),
           _u32_kv("general.file_type", int(FTYPES[ftype][1]))]
    infos, offset = [], 0
    for tensor, qtype in zip(tensors, types, strict=True):
        ne, raw = _dims(tensor), tensor.name.encode()
        infos.append(struct.pack("<Q", len(raw)) + raw + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, qtype, offset))
        offset += _pad(_nbytes(ne, qtype), align)
    head = struct.pack("<IIQQ", gguf.GGUF_MAGIC, 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(infos)

    fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, progress.bar(f"quantize {ftype} (numpy)", len(tensors), unit="tensor") as bar:
            out.write(head + bytes(_pad(len(head), align) - len(head)))
            for tensor, qtype in zip(tensors, types, strict=True):
                data = _encode(tensor, _dims(tensor), qtype)
                out.write(data + bytes(_pad(len(data), align) - len(data)))
                bar.update(1)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return [(t.name, q) for t, q in zip(tensors, types, strict=True)]
