"""Every quantization type of the installed llama.cpp, on a converted tiny llama.

Each output loads in llama-cpp-python and generates. Its ``general.file_type`` must be the type's
``llama_ftype`` and its tensor types must be what llama.cpp decides: with a built or sideloaded
``llama-quantize`` at hand, the tool's own output on the same input is the oracle (same file type,
same type for every tensor); without one, the rules of ``llama_tensor_get_type`` in
``src/llama-quant.cpp`` that apply to this model are asserted (norms stay F32, output.weight and
token_embd.weight get their documented types, the other weights the type's default or one of its
documented mixes).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from ggufpack.errors import UsageError
from ggufpack.options.quantize import QuantizeOptions
from ggufpack.quantize.api import quantize_model
from ggufpack.quantize.types import IMATRIX_REQUIRED, normalize_quantize_type, type_table
from tests.helpers.tiny_quant import (
    built_tool_backend,
    generate,
    read_gguf_header,
    tensor_type_names,
    tiny_f16,
    tiny_imatrix,
)

LLAMA_QUANTIZE_SOURCE = Path("/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/tools/quantize/quantize.cpp")
_IQ_OUTPUT_Q5K = {"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}
_TOKEN_EMBD = {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K", "IQ2_S": "IQ3_S",
               "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S", "TQ1_0": "Q4_K", "TQ2_0": "Q4_K", "Q2_0": "Q4_K",
               "MXFP4_MOE": "Q8_0"}
#: the K-quant mixes of llama-quant.cpp that apply to a dense 2-layer llama (n_gqa 2): the other types
#: a file type may give its weights besides its default one
_MIXES = {
    "Q2_K": {"Q3_K"}, "Q2_K_S": {"Q4_K"}, "Q3_K_M": {"Q4_K", "Q5_K"}, "Q3_K_L": {"Q5_K"},
    "Q4_K_S": {"Q5_K"}, "Q4_K_M": {"Q6_K"}, "Q5_K_M": {"Q6_K"}, "IQ3_XS": {"IQ3_XXS"},
    "IQ3_XXS": {"IQ2_S", "IQ3_S"}, "IQ3_M": {"Q4_K"}, "IQ4_NL": {"Q5_K"}, "IQ4_XS": {"Q5_K"},
    "IQ2_XXS": {"Q2_K"}, "IQ2_XS": {"Q2_K"}, "IQ1_S": {"Q2_K", "IQ2_XXS"}, "IQ1_M": {"Q2_K", "IQ2_XXS"},
    "IQ2_S": {"IQ3_S"}, "IQ2_M": {"IQ3_S"}, "Q4_0": {"Q4_1"}, "Q5_0": {"Q5_1"}, "MXFP4_MOE": {"Q8_0"},
}
TYPES = list(type_table())


def test_table_is_llama_quantize_list() -> None:
    """The table holds what llama-quantize lists (its QUANT_OPTIONS, aliases aside), default Q5_K_M."""
    names = set(TYPES)
    assert {"Q4_0", "Q5_K_M", "IQ1_S", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4_MOE", "F16", "BF16", "F32", "COPY"} <= names
    assert "NVFP4" not in names  # llama.h names it, but llama_model_quantize refuses it
    assert normalize_quantize_type("q4_k") == "Q4_K_M" and normalize_quantize_type("Q5_K") == "Q5_K_M"
    assert normalize_quantize_type("Q9_K") is None
    if LLAMA_QUANTIZE_SOURCE.is_file():  # the vendored tool's own list, when the sources are here
        listed = set(re.findall(r'\{ "(\w+)",\s*LLAMA_FTYPE', LLAMA_QUANTIZE_SOURCE.read_text()))
        assert names == listed - {"Q3_K", "Q4_K", "Q5_K"}


def _rule_check(qtype: str, types: dict[str, str], source_types: dict[str, str]) -> None:
    row = type_table()[qtype]
    assert all(types[n] == "F32" for n in types if n.endswith("_norm.weight"))
    weights = {n: t for n, t in types.items() if not n.endswith("_norm.weight")}
    if qtype == "COPY":
        assert types == source_types
        return
    main = row.default_tensor_type
    if qtype in ("F32", "F16", "BF16"):
        assert set(weights.values()) == {main}
        return
    output = "Q8_0" if qtype == "MXFP4_MOE" or main == "Q8_0" else "Q5_K" if qtype in _IQ_OUTPUT_Q5K else "Q6_K"
    assert weights.pop("output.weight") == output
    assert weights.pop("token_embd.weight") == _TOKEN_EMBD.get(qtype, main)
    counts = Counter(weights.values())
    assert counts[main] >= 1 or qtype == "MXFP4_MOE", counts
    assert set(counts) <= {main} | _MIXES.get(qtype, set()), counts


@pytest.mark.slow
def test_every_type_quantizes_loads_and_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tiny_f16()
    imatrix = tiny_imatrix()
    source_types = tensor_type_names(source)
    oracle = built_tool_backend("quantize", monkeypatch, required=False)
    failures = []
    for qtype in TYPES:
        row = type_table()[qtype]
        options = QuantizeOptions(type=qtype, threads=2, imatrix=imatrix if row.needs_imatrix else None)
        out = tmp_path / f"{qtype}.gguf"
        (written,) = quantize_model(source, out, options)
        metadata, _ = read_gguf_header(written)
        expected_ftype = row.ftype if row.ftype is not None else read_gguf_header(source)[0]["general.file_type"]
        assert metadata["general.file_type"] == expected_ftype, qtype
        types = tensor_type_names(written)
        if oracle is not None:
            (tool_out,) = quantize_model(source, tmp_path / f"{qtype}.tool.gguf", options, backend=oracle.name)
            assert tensor_type_names(tool_out) == types, qtype
            assert read_gguf_header(tool_out)[0]["general.file_type"] == metadata["general.file_type"]
        else:
            _rule_check(qtype, types, source_types)
        tokens = generate(written)
        if len(tokens) != 4:
            failures.append(qtype)
        written.unlink()
    assert not failures


@pytest.mark.parametrize("qtype", sorted(IMATRIX_REQUIRED))
def test_types_needing_an_imatrix_refuse_without_one(tmp_path: Path, qtype: str) -> None:
    out = tmp_path / "out.gguf"
    with pytest.raises(UsageError, match=f"{qtype} needs an importance matrix"):
        quantize_model(tiny_f16(), out, QuantizeOptions(type=qtype, threads=2))
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_types_not_needing_one_do_without(tmp_path: Path) -> None:
    """The complement: llama.cpp's own per-tensor check passes for every other type of the table."""
    for qtype in TYPES:
        if qtype in IMATRIX_REQUIRED or qtype in ("F32", "F16", "BF16", "COPY"):
            continue
        (written,) = quantize_model(tiny_f16(), tmp_path / f"{qtype}.gguf", QuantizeOptions(type=qtype, threads=2))
        written.unlink()


def test_the_name_table_equals_the_installed_llama_cpp() -> None:
    """``plan`` checks type names against a data table; it must be what the loaded llama.cpp offers."""
    from ggufpack.options.quant_names import FILE_TYPES, TENSOR_TYPES
    from ggufpack.quantize.types import tensor_types

    assert list(FILE_TYPES) == list(type_table()), "update ggufpack/options/quant_names.py FILE_TYPES"
    assert set(TENSOR_TYPES) == set(tensor_types()), "update ggufpack/options/quant_names.py TENSOR_TYPES"
