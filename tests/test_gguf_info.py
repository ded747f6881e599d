"""GGUF header reading, model facts, gguf-packer config entries and labels, on real GGUF files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

import gguf
import pytest
from gguf.constants import GGMLQuantizationType, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggufpack.errors import GGUFPackError
from ggufpack.gguf_info import (
    ElidedArray,
    GGUFArray,
    TensorInfo,
    file_type_name,
    format_bpw,
    format_parameters,
    header_from_config_entry,
    infer_file_type,
    model_config_entry,
    model_facts,
    model_labels,
    read_gguf,
    read_header,
    read_header_file,
)
from tests.helpers.ggufmaker import N_EMBD, N_FF, N_VOCAB, make_gguf, tensor_shapes

Q = GGMLQuantizationType

# By hand, for the default two-layer model: token_embd and output are N_EMBD x N_VOCAB; each block
# has four N_EMBD x N_EMBD attention matrices, three N_EMBD x N_FF ffn matrices and two norms.
MATRIX_ELEMENTS = 2 * N_EMBD * N_VOCAB + 2 * (4 * N_EMBD * N_EMBD + 3 * N_EMBD * N_FF)
NORM_ELEMENTS = 2 * 2 * N_EMBD + N_EMBD
PARAMETERS = MATRIX_ELEMENTS + NORM_ELEMENTS


def _bytes_for(weight_type: GGMLQuantizationType) -> int:
    matrix_bytes = {Q.F32: 4 * MATRIX_ELEMENTS, Q.F16: 2 * MATRIX_ELEMENTS, Q.Q8_0: MATRIX_ELEMENTS // 32 * 34}
    return matrix_bytes[weight_type] + 4 * NORM_ELEMENTS


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {wt: make_gguf(d / f"tiny-{wt}.gguf", weight_type=wt) for wt in ("F32", "F16", "Q8_0")}


def _header_bytes(path: Path) -> bytes:
    header = read_header_file(path)
    with open(path, "rb") as f:
        return f.read(header.data_offset)


# --- facts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("weight_type", "name", "ftype"), [("F32", "F32", 0), ("F16", "F16", 1), ("Q8_0", "Q8_0", 7)])
def test_facts_of_real_files(models: dict[str, Path], weight_type: str, name: str, ftype: int) -> None:
    header = read_header_file(models[weight_type])
    facts = model_facts(header)
    expected_bytes = _bytes_for(Q[weight_type])
    assert PARAMETERS == 102_720
    assert facts.parameters == PARAMETERS
    assert facts.model_bytes == expected_bytes
    assert facts.bits_per_weight == pytest.approx(expected_bytes * 8 / PARAMETERS)
    assert (facts.file_type, facts.file_type_id) == (name, ftype)
    assert facts.architecture == "llama"
    assert facts.usage == "text-to-text"
    # The header agrees with gguf-py's own reader.
    reader = gguf.GGUFReader(models[weight_type])
    assert header.data_offset == reader.data_offset
    assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
    assert header.file_size - header.data_offset == expected_bytes
    assert header.tensors[0].shape == (N_EMBD, N_VOCAB)


def test_metadata_values_and_types(models: dict[str, Path]) -> None:
    header = read_header_file(models["F16"])
    md, types = header.metadata, header.value_types
    assert md["general.name"] == "Tiny Test Model"
    assert md["llama.block_count"] == 2 and types["llama.block_count"] == GGUFValueType.UINT32
    assert md["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    tokens = md["tokenizer.ggml.tokens"]
    assert isinstance(tokens, GGUFArray) and tokens.item_type == GGUFValueType.STRING
    assert tokens[:3] == ["tok0", "tok1", "tok2"] and len(tokens) == N_VOCAB
    assert md["tokenizer.ggml.token_type"].item_type == GGUFValueType.INT32
    assert header.alignment == 32 and header.version == 3


def test_every_value_type_and_nested_arrays(tmp_path: Path) -> None:
    extra = {
        "t.u8": (200, GGUFValueType.UINT8),
        "t.i8": (-5, GGUFValueType.INT8),
        "t.u16": (60000, GGUFValueType.UINT16),
        "t.i16": (-300, GGUFValueType.INT16),
        "t.i32": (-70000, GGUFValueType.INT32),
        "t.f32": (0.5, GGUFValueType.FLOAT32),
        "t.bool": (True, GGUFValueType.BOOL),
        "t.u64": (2**63 + 5, GGUFValueType.UINT64),
        "t.i64": (-(2**40), GGUFValueType.INT64),
        "t.f64": (1 / 3, GGUFValueType.FLOAT64),
        "t.bools": ([True, False, True], GGUFValueType.BOOL),
        "t.nested": [[1, 2], [3]],
    }
    header = read_header_file(make_gguf(tmp_path / "m.gguf", extra_kv=extra))
    for key, (value, vtype) in ((k, v) for k, v in extra.items() if isinstance(v, tuple)):
        assert header.metadata[key] == value
        if not isinstance(value, list):
            assert header.value_types[key] == vtype
    nested = header.metadata["t.nested"]
    assert nested == [[1, 2], [3]] and nested.item_type == GGUFValueType.ARRAY
    assert nested[0].item_type == GGUFValueType.INT32


def test_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_uint32("llama.block_count", 7)
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_tensor("w.weight", gguf.quants.quantize(_ones(64, 2), Q.Q8_0), raw_dtype=Q.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_header_file(path)
    assert header.version == 3
    assert header.metadata["llama.block_count"] == 7 and header.metadata["t.ints"] == [1, 2, 3]
    assert header.tensors[0].shape == (64, 2) and header.tensors[0].ggml_type == Q.Q8_0


def _ones(cols: int, rows: int) -> Any:
    import numpy as np

    return np.ones((rows, cols), dtype=np.float32)


@pytest.mark.parametrize(
    ("ftype", "name"),
    [
        (0, "F32"),
        (1, "F16"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (17, "Q5_K_M"),
        (19, "IQ2_XXS"),
        (32, "BF16"),
        (36, "TQ1_0"),
        (38, "MXFP4_MOE"),
        (1024 | 15, "Q4_K_M"),
        (4, None),
        (9999, None),
    ],
)
def test_file_type_names(ftype: int, name: str | None) -> None:
    assert file_type_name(ftype) == name


def test_file_type_inferred_when_absent(tmp_path: Path) -> None:
    header = read_header_file(make_gguf(tmp_path / "m.gguf", weight_type="Q8_0", file_type=None))
    assert "general.file_type" not in header.metadata
    facts = model_facts(header)
    assert (facts.file_type, facts.file_type_id) == ("Q8_0", 7)


def test_unknown_declared_file_type_falls_back_to_inference(tmp_path: Path) -> None:
    header = read_header_file(make_gguf(tmp_path / "m.gguf", weight_type="F16", file_type=4))
    assert model_facts(header).file_type == "F16"


def _tensors(*types: GGMLQuantizationType) -> list[TensorInfo]:
    return [TensorInfo(f"blk.{i}.w.weight", (256, 256), t, 0) for i, t in enumerate(types)] + [
        TensorInfo("blk.0.norm.weight", (256,), Q.F32, 0)
    ]


@pytest.mark.parametrize(
    ("types", "name"),
    [
        ((Q.Q4_K, Q.Q4_K, Q.Q4_K, Q.Q6_K, Q.Q6_K), "Q4_K_M"),
        ((Q.Q4_K, Q.Q4_K, Q.Q5_K), "Q4_K_S"),
        ((Q.Q5_K, Q.Q5_K, Q.Q5_K, Q.Q6_K, Q.Q6_K), "Q5_K_M"),
        ((Q.Q3_K, Q.Q3_K, Q.Q3_K, Q.Q5_K, Q.Q5_K), "Q3_K_L"),
        ((Q.Q6_K,), "Q6_K"),
        ((Q.F32, Q.F32), "F32"),
        ((Q.F32, Q.F32, Q.F32, Q.BF16), "BF16"),
        ((Q.MXFP4, Q.MXFP4, Q.Q8_0), "MXFP4_MOE"),
        ((Q.IQ2_XXS,), "IQ2_XXS"),
        ((Q.TQ1_0,), "TQ1_0"),
    ],
)
def test_infer_file_type_from_mixes(types: tuple[GGMLQuantizationType, ...], name: str) -> None:
    inferred = infer_file_type(_tensors(*types))
    assert inferred is not None and file_type_name(inferred) == name


def test_usage(tmp_path: Path) -> None:
    def usage(**kw: Any) -> str:
        return model_facts(read_header_file(make_gguf(tmp_path / "m.gguf", **kw))).usage

    assert usage(embedding=True) == "embedding"
    assert usage(arch="bert") == "embedding"
    assert usage(extra_kv={"llama.pooling_type": int(gguf.PoolingType.RANK)}) == "reranking"
    assert usage(extra_kv={"general.type": "adapter"}) == "adapter"
    assert usage(arch="clip") == "projector"
    assert usage(extra_kv={"llama.pooling_type": int(gguf.PoolingType.NONE)}) == "text-to-text"


def test_formats() -> None:
    assert format_parameters(494_030_000) == "494.03 M"
    assert format_parameters(7_241_732_096) == "7.24 B"
    assert format_parameters(1_000_000) == "1 M"
    assert format_parameters(102_720) == "102.72 K"
    assert format_parameters(1_500_000_000_000) == "1.50 T"
    assert format_parameters(999) == "999"
    assert format_parameters(0) == "0"
    assert format_bpw(6.7123) == "6.71 bpw"
    assert format_bpw(16.0) == "16.00 bpw"
    assert format_bpw(0) == "0 bpw"


# --- split sets ---------------------------------------------------------------------------------


def test_split_set(tmp_path: Path, models: dict[str, Path]) -> None:
    first = make_gguf(tmp_path / "split.gguf", split_max_tensors=7)
    assert first.name == "split-00001-of-00003.gguf"
    headers = read_gguf(first)
    assert len(headers) == 3
    assert [h.metadata["split.no"] for h in headers] == [0, 1, 2]
    assert read_gguf(tmp_path / "split-00002-of-00003.gguf")[1].tensors == headers[1].tensors
    assert model_facts(headers) == model_facts(read_header_file(models["F16"]))
    assert len(read_gguf(models["F16"])) == 1

    entry = model_config_entry(headers, cmd_value="split-00001-of-00003.gguf", cmd_index=1)
    gguf_json = entry["GGUF"]
    assert gguf_json["header"]["tensorCount"] == len(tensor_shapes(2))
    assert len(gguf_json["splitSizes"]) == 3 and sum(gguf_json["splitSizes"]) == gguf_json["size"]
    assert "split.no" not in {kv["key"] for kv in gguf_json["header"]["metadataKV"]}
    assert model_facts(header_from_config_entry(entry)) == model_facts(headers)

    (tmp_path / "split-00003-of-00003.gguf").unlink()
    with pytest.raises(GGUFPackError, match="missing"):
        read_gguf(first)


def test_split_metadata_must_match_names(tmp_path: Path) -> None:
    first = make_gguf(tmp_path / "s.gguf", split_max_tensors=10)
    first.rename(tmp_path / "lonely.gguf")
    with pytest.raises(GGUFPackError, match=r"split\.count"):
        read_gguf(tmp_path / "lonely.gguf")


# --- gguf-packer config entries -----------------------------------------------------------------


def test_config_entry_round_trip(tmp_path: Path) -> None:
    extra = {
        "t.small": ([1.5, 2.5], GGUFValueType.FLOAT32),
        "t.nan": (math.nan, GGUFValueType.FLOAT32),
        "t.inf": (-math.inf, GGUFValueType.FLOAT64),
        "t.nested": [[1, 2], [3]],
    }
    header = read_header_file(make_gguf(tmp_path / "m.gguf", weight_type="Q8_0", extra_kv=extra))
    entry = model_config_entry(header, cmd_value="/models/m.gguf", cmd_index=1)
    text = json.dumps(entry, allow_nan=False)
    assert set(entry) == {
        "GGUF",
        "Architecture",
        "Parameters",
        "BitsPerWeight",
        "FileType",
        "CmdParameterValue",
        "CmdParameterIndex",
    }
    assert entry["Architecture"] == "llama" and entry["FileType"] == 7
    assert entry["Parameters"] == PARAMETERS
    assert entry["BitsPerWeight"] == pytest.approx(_bytes_for(Q.Q8_0) * 8 / PARAMETERS)
    assert (entry["CmdParameterValue"], entry["CmdParameterIndex"]) == ("/models/m.gguf", 1)

    kvs = {kv["key"]: kv for kv in entry["GGUF"]["header"]["metadataKV"]}
    tokens = kvs["tokenizer.ggml.tokens"]
    assert tokens["valueType"] == GGUFValueType.ARRAY
    assert tokens["value"]["type"] == GGUFValueType.STRING and tokens["value"]["len"] == N_VOCAB
    assert "array" not in tokens["value"] and tokens["value"]["size"] == sum(8 + len(f"tok{i}") for i in range(N_VOCAB))
    assert kvs["t.small"]["value"]["array"] == [1.5, 2.5]
    assert entry["GGUF"]["header"]["magic"] == gguf.GGUF_MAGIC
    assert entry["GGUF"]["tensorInfos"][0] == {
        "name": "token_embd.weight",
        "nDimensions": 2,
        "dimensions": [N_EMBD, N_VOCAB],
        "type": int(Q.Q8_0),
        "offset": 0,
    }

    back = header_from_config_entry(json.loads(text))
    assert back.tensors == header.tensors
    assert (back.data_offset, back.infos_end, back.file_size, back.version) == (
        header.data_offset,
        header.infos_end,
        header.file_size,
        header.version,
    )
    assert back.value_types == header.value_types
    assert isinstance(back.metadata["tokenizer.ggml.tokens"], ElidedArray)
    assert len(back.metadata["tokenizer.ggml.tokens"]) == N_VOCAB
    assert back.metadata["t.nested"] == [[1, 2], [3]]
    assert math.isnan(back.metadata["t.nan"]) and back.metadata["t.inf"] == -math.inf
    for key, value in header.metadata.items():
        if not (isinstance(value, GGUFArray) and len(value) > 128) and key != "t.nan":
            assert back.metadata[key] == value, key
    assert model_config_entry(back, cmd_value="/models/m.gguf", cmd_index=1) == json.loads(text)
    assert model_facts(back) == model_facts(header)


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {"GGUF": {}},
        {"GGUF": {"header": {"version": 3, "metadataKV": [{"key": "a", "valueType": 99, "value": 1}]}, "size": 1}},
        {"GGUF": {"header": {"version": 3, "metadataKV": [{"key": "a", "valueType": 4, "value": "x"}]}, "size": 1}},
        {
            "GGUF": {
                "header": {"version": 3},
                "size": 1,
                "tensorInfos": [{"name": "t", "dimensions": [1, 1, 1, 1, 1], "type": 0, "offset": 0}],
            }
        },
        {"GGUF": {"header": {"version": 3}, "size": 1, "tensorInfos": [{"name": "t", "dimensions": [1], "type": 4}]}},
    ],
)
def test_malformed_config_entries(entry: dict[str, Any]) -> None:
    with pytest.raises(GGUFPackError, match="malformed GGUF entry"):
        header_from_config_entry(entry)


# --- labels -------------------------------------------------------------------------------------


def test_labels_from_model(models: dict[str, Path]) -> None:
    labels = model_labels(read_header_file(models["Q8_0"]), user_labels={})
    bpw = _bytes_for(Q.Q8_0) * 8 / PARAMETERS
    assert labels == {
        "gguf.model.architecture": "llama",
        "gguf.model.parameters": "102.72 K",
        "gguf.model.bpw": f"{bpw:.2f} bpw",
        "gguf.model.filetype": "Q8_0",
        "gguf.model.usage": "text-to-text",
        "gguf.model.name": "Tiny Test Model",
        "org.opencontainers.image.title": "Tiny Test Model",
        "gguf.model.authors": "ggufpack tests",
        "org.opencontainers.image.authors": "ggufpack tests",
        "gguf.model.url": "https://example.com/tiny",
        "org.opencontainers.image.url": "https://example.com/tiny",
        "gguf.model.description": "A tiny llama-shaped model for tests.",
        "org.opencontainers.image.description": "A tiny llama-shaped model for tests.",
        "gguf.model.licenses": "MIT",
        "org.opencontainers.image.licenses": "MIT",
        "gguf.model.vendor": "ggufpack",
        "org.opencontainers.image.vendor": "ggufpack",
    }


def test_user_labels_win(tmp_path: Path) -> None:
    path = make_gguf(
        tmp_path / "m.gguf",
        extra_kv={"general.url": None, "general.repo_url": "https://hf.co/x", "general.license": None},
    )
    user = {
        "gguf.model.filetype": "custom",
        "org.opencontainers.image.title": "My Title",
        "gguf.model.vendor": "acme",
        "other": "kept",
    }
    labels = model_labels(read_header_file(path), user_labels=user)
    assert {k: labels[k] for k in user} == user
    assert labels["gguf.model.name"] == "My Title"
    assert labels["org.opencontainers.image.vendor"] == "acme"
    assert labels["gguf.model.url"] == labels["org.opencontainers.image.url"] == "https://hf.co/x"
    assert "gguf.model.licenses" not in labels and "org.opencontainers.image.licenses" not in labels


# --- hostile input ------------------------------------------------------------------------------


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _gguf(kvs: bytes = b"", n_kv: int = 0, tensors: bytes = b"", n_tensors: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + tensors


def _tensor(name: bytes, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (
        _string(name)
        + struct.pack("<I", len(dims))
        + struct.pack(f"<{len(dims)}Q", *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def _read(data: bytes) -> Any:
    return read_header(io.BytesIO(data))


def test_truncated_at_every_offset(models: dict[str, Path]) -> None:
    data = _header_bytes(models["Q8_0"])
    infos_end = read_header_file(models["Q8_0"]).infos_end
    for cut in range(infos_end):
        with pytest.raises(GGUFPackError, match=r"truncated|not a GGUF|impossible"):
            _read(data[:cut])
    # A stored header without padding or data still reads.
    assert _read(data[:infos_end]).tensors == read_header_file(models["Q8_0"]).tensors


def test_truncation_message_names_offset() -> None:
    with pytest.raises(GGUFPackError, match=r"truncated GGUF header: needed 8 bytes at offset 8"):
        _read(b"GGUF" + struct.pack("<I", 3) + b"\0\0")


def test_header_inside_a_larger_stream(models: dict[str, Path]) -> None:
    data = _header_bytes(models["F16"])
    f = io.BytesIO(b"x" * 100 + data)
    f.seek(100)
    assert read_header(f).tensors == read_header_file(models["F16"]).tensors


_HOSTILE = [
    (b"", "not a GGUF"),
    (b"GGML" + bytes(20), "bad magic"),
    (_gguf(version=1), "version 1"),
    (_gguf(version=4), "version 4"),
    (_gguf(kvs=_string(b"k") + struct.pack("<I", 13), n_kv=1), "unknown value type 13"),
    (_gguf(kvs=struct.pack("<Q", 2**62) + bytes(64), n_kv=1), "metadata key of 4611686018427387904 bytes"),
    (_gguf(kvs=_string(b"k") + struct.pack("<IQ", 8, 2**40), n_kv=1), "value of 'k'"),
    (_gguf(kvs=_string(b"k") + struct.pack("<IIQ", 9, 0, 2**60), n_kv=1), "length of array 'k'"),
    (_gguf(kvs=_string(b"k") + struct.pack("<IIQ", 9, 8, 2**40), n_kv=1), "length of array 'k'"),
    (_gguf(n_kv=2**40), "metadata key/value count"),
    (_gguf(n_tensors=2**40), "tensor count"),
    (_gguf(tensors=_tensor(b"t", [2**32, 2**32]), n_tensors=1), "63 bits"),
    (_gguf(tensors=_tensor(b"t", [2**63]), n_tensors=1), "63 bits"),
    (_gguf(tensors=_tensor(b"t", [1, 1, 1, 1, 1]), n_tensors=1), "5 dimensions"),
    (_gguf(tensors=_tensor(b"t", [32], ggml_type=4), n_tensors=1), "unknown ggml type 4"),
    (_gguf(tensors=_tensor(b"t", [32], ggml_type=999), n_tensors=1), "unknown ggml type 999"),
    (_gguf(tensors=_tensor(b"t", [33], ggml_type=int(Q.Q8_0)), n_tensors=1), "block size"),
    (_gguf(tensors=_tensor(b"t", [1]) * 2, n_tensors=2), "duplicate tensor"),
    (_gguf(kvs=(_string(b"k") + struct.pack("<IB", 0, 1)) * 2, n_kv=2), "duplicate metadata key"),
    (_gguf(kvs=_string(b"general.alignment") + struct.pack("<II", 4, 3), n_kv=1), "power of two"),
    (_gguf(kvs=_string(b"general.alignment") + struct.pack("<II", 4, 0), n_kv=1), "power of two"),
    (_gguf(kvs=_string(b"general.alignment") + struct.pack("<IQ", 10, 32), n_kv=1), "power of two"),
    (
        _gguf(
            kvs=_string(b"k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 10 + struct.pack("<IQ", 0, 0), n_kv=1
        ),
        "nested deeper",
    ),
]


@pytest.mark.parametrize(("data", "message"), [pytest.param(d, m, id=m) for d, m in _HOSTILE])
def test_hostile_headers(data: bytes, message: str) -> None:
    with pytest.raises(GGUFPackError, match=message):
        _read(data)


def test_hostile_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"nope")
    with pytest.raises(GGUFPackError, match=r"bad\.gguf: not a GGUF"):
        read_header_file(path)
    with pytest.raises(GGUFPackError, match="cannot read"):
        read_header_file(tmp_path / "absent.gguf")


_VALID = _gguf(
    kvs=_string(b"general.architecture")
    + struct.pack("<I", 8)
    + _string(b"llama")
    + _string(b"a.arr")
    + struct.pack("<IIQ", 9, 8, 2)
    + _string(b"x")
    + _string(b"yz")
    + _string(b"a.num")
    + struct.pack("<IIQ", 9, 4, 3)
    + struct.pack("<3I", 1, 2, 3)
    + _string(b"general.alignment")
    + struct.pack("<II", 4, 32),
    n_kv=4,
    tensors=_tensor(b"a.weight", [64, 2], int(Q.Q8_0)) + _tensor(b"b", [3], 0, 160),
    n_tensors=2,
)


def test_valid_handmade_header() -> None:
    header = _read(_VALID)
    assert header.metadata["a.arr"] == ["x", "yz"] and header.metadata["a.num"] == [1, 2, 3]
    assert [t.name for t in header.tensors] == ["a.weight", "b"]
    assert header.data_offset % 32 == 0 and header.data_offset >= header.infos_end == len(_VALID)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID) - 1), st.sampled_from([1, 4, 8]), st.integers(0, 2**64 - 1)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 64),
)
def test_random_mutations_only_raise_gguf_errors(mutations: list[tuple[int, int, int]], tail: int) -> None:
    data = bytearray(_VALID + bytes(tail))
    for at, width, value in mutations:
        data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    with contextlib.suppress(GGUFPackError):
        _read(bytes(data))


def test_huge_sparse_file_reads_fast(tmp_path: Path) -> None:
    path = make_gguf(tmp_path / "huge.gguf", weight_type="Q8_0")
    expected = read_header_file(path)
    size = 50 * 2**30
    os.truncate(path, size)
    start = time.monotonic()
    header = read_header_file(path)
    assert time.monotonic() - start < 1.0
    assert header.file_size == size
    assert header.tensors == expected.tensors and model_facts(header) == model_facts(expected)
