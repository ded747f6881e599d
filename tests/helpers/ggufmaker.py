"""Write small but real GGUF files for tests: a tiny llama-shaped model made with ``gguf.GGUFWriter``.

The model has token embeddings, ``n_layers`` blocks of attention and feed-forward weights in the
chosen ggml type (quantized with ``gguf.quants``), F32 norms, an output norm and (unless it is an
embedding model) an output head, plus ``general.*`` metadata and a tokenizer whose arrays are
longer than the image config keeps inline.

Shapes (GGUF order, row length first): embeddings and output ``(N_EMBD, N_VOCAB)``, attention
``(N_EMBD, N_EMBD)``, ffn gate/up ``(N_EMBD, N_FF)``, ffn down ``(N_FF, N_EMBD)``, norms ``(N_EMBD,)``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
from gguf.constants import GGMLQuantizationType, GGUFValueType, LlamaFileType

N_EMBD = 64
N_FF = 128
N_VOCAB = 160
N_HEAD = 4

GENERAL = {
    "general.name": "Tiny Test Model",
    "general.author": "ggufpack tests",
    "general.url": "https://example.com/tiny",
    "general.description": "A tiny llama-shaped model for tests.",
    "general.license": "MIT",
}

_FILE_TYPES = {
    GGMLQuantizationType.F32: LlamaFileType.ALL_F32,
    GGMLQuantizationType.F16: LlamaFileType.MOSTLY_F16,
    GGMLQuantizationType.BF16: LlamaFileType.MOSTLY_BF16,
    GGMLQuantizationType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    GGMLQuantizationType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    GGMLQuantizationType.Q5_0: LlamaFileType.MOSTLY_Q5_0,
}


def tensor_shapes(n_layers: int, *, embedding: bool = False) -> dict[str, tuple[int, ...]]:
    """Name → GGUF shape of every tensor :func:`make_gguf` writes, in order."""
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (N_EMBD, N_VOCAB)}
    for i in range(n_layers):
        blk = f"blk.{i}"
        shapes[f"{blk}.attn_norm.weight"] = (N_EMBD,)
        for proj in ("q", "k", "v", "output"):
            shapes[f"{blk}.attn_{proj}.weight"] = (N_EMBD, N_EMBD)
        shapes[f"{blk}.ffn_norm.weight"] = (N_EMBD,)
        shapes[f"{blk}.ffn_gate.weight"] = (N_EMBD, N_FF)
        shapes[f"{blk}.ffn_up.weight"] = (N_EMBD, N_FF)
        shapes[f"{blk}.ffn_down.weight"] = (N_FF, N_EMBD)
    shapes["output_norm.weight"] = (N_EMBD,)
    if not embedding:
        shapes["output.weight"] = (N_EMBD, N_VOCAB)
    return shapes


def _kv_type(value: Any) -> GGUFValueType:
    if isinstance(value, int) and not isinstance(value, bool):
        return GGUFValueType.UINT32
    return GGUFValueType.get_type(value)


def make_gguf(
    path: str | Path,
    *,
    arch: str = "llama",
    weight_type: GGMLQuantizationType | str = GGMLQuantizationType.F16,
    file_type: int | Literal["auto"] | None = "auto",
    n_layers: int = 2,
    embedding: bool = False,
    extra_kv: Mapping[str, Any] | None = None,
    split_max_tensors: int = 0,
    seed: int = 0,
) -> Path:
    """Write a tiny model to ``path`` and return the path of its (first) file.

    ``weight_type`` is the ggml type of the 2-D weights (F32, F16, BF16, Q8_0, Q4_0, Q5_0); norms
    stay F32. ``file_type`` is written as ``general.file_type``: ``"auto"`` derives it from
    ``weight_type``, ``None`` leaves the key out. ``embedding`` makes a non-causal embedding model
    (``<arch>.pooling_type`` = mean, ``<arch>.attention.causal`` = false, no output head).
    ``extra_kv`` adds or replaces metadata: ``key: value`` (ints are written as uint32) or
    ``key: (value, GGUFValueType)`` (for a list, the type of its items); ``None`` removes a default key.
    ``split_max_tensors`` > 0 writes a split set named ``<stem>-0000i-of-0000n.gguf``.
    """
    path = Path(path)
    wtype = GGMLQuantizationType[weight_type] if isinstance(weight_type, str) else weight_type
    kv: dict[str, Any] = {
        **GENERAL,
        f"{arch}.context_length": 128,
        f"{arch}.embedding_length": N_EMBD,
        f"{arch}.block_count": n_layers,
        f"{arch}.feed_forward_length": N_FF,
        f"{arch}.attention.head_count": N_HEAD,
        f"{arch}.attention.head_count_kv": N_HEAD,
        f"{arch}.attention.layer_norm_rms_epsilon": (1e-5, GGUFValueType.FLOAT32),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(N_VOCAB)],
        "tokenizer.ggml.scores": [float(-i) for i in range(N_VOCAB)],
        "tokenizer.ggml.token_type": ([1] * N_VOCAB, GGUFValueType.INT32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    if embedding:
        kv[f"{arch}.pooling_type"] = int(gguf.PoolingType.MEAN)
        kv[f"{arch}.attention.causal"] = False
    if file_type == "auto":
        kv["general.file_type"] = int(_FILE_TYPES[wtype])
    elif file_type is not None:
        kv["general.file_type"] = file_type
    kv.update(extra_kv or {})

    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    for key, spec in kv.items():
        if spec is None:
            continue
        value, vtype = spec if isinstance(spec, tuple) else (spec, None)
        if isinstance(value, list):
            item_type = _kv_type(value[0]) if vtype is None else vtype
            writer.add_key_value(key, value, GGUFValueType.ARRAY, sub_type=item_type)
        else:
            writer.add_key_value(key, value, _kv_type(value) if vtype is None else vtype)

    rng = np.random.default_rng(seed)
    for name, shape in tensor_shapes(n_layers, embedding=embedding).items():
        data = rng.standard_normal(shape[::-1], dtype=np.float32)
        if len(shape) == 1 or wtype == GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif wtype == GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, wtype), raw_dtype=wtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)[0]


# --- hand-made GGUF bytes, for headers no writer would produce ------------------------------------


def raw_string(text: str | bytes) -> bytes:
    """A GGUF string: uint64 length, then the bytes."""
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def raw_kv(key: str, vtype: GGUFValueType, payload: bytes) -> bytes:
    """One metadata key/value: the key, the uint32 value type, the value's bytes as given."""
    return raw_string(key) + struct.pack("<I", vtype) + payload


def raw_tensor_info(name: str, shape: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    """One tensor info: name, n_dims, dims (GGUF order), ggml type, data offset."""
    return (raw_string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
            + struct.pack("<IQ", ggml_type, offset))


def raw_gguf(kvs: Sequence[bytes] = (), tensors: Sequence[bytes] = (), *, version: int = 3,
             n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    """Magic, version, counts (those of the lists unless given), key/values, tensor infos: no padding or data."""
    return (b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                  len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors))
