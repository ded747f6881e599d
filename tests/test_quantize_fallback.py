"""The numpy quantizer writes the very bytes llama.cpp's ``llama_model_quantize`` writes.

Two converted tiny llamas: ``small`` (width 64, untied head: TQ1_0/TQ2_0 blocks of 256 do not fit, so
llama.cpp's shape fallbacks are exercised, and the head becomes Q8_0) and ``wide`` (width 256, head
tied to the token embeddings: real ternary blocks, and the rules that would pick Q6_K/Q4_K, which the
gguf package cannot encode, are steered with the output/token-embedding options).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from ggufpack.convert import convert
from ggufpack.errors import GGUFPackError, UsageError
from ggufpack.options.quantize import QuantizeOptions
from ggufpack.quantize.fallback import FTYPES, plan, quantize
from tests.helpers.llamacpp_build import inprocess_quantize
from tests.helpers.tinymodels import make_tiny_llama

Q = gguf.GGMLQuantizationType
WIDE = {"hidden_size": 256, "intermediate_size": 512, "tie_word_embeddings": True}


def llama_cpp_quantize(src: Path, dest: Path, options: QuantizeOptions) -> None:
    """The reference: llama.cpp itself, in process, with the same options."""
    inprocess_quantize(src, dest, options.type, pure=options.pure, leave_output_tensor=options.leave_output_tensor,
                       output_tensor_type=options.output_tensor_type, token_embedding_type=options.token_embedding_type)


def tensor_types(path: Path) -> list[tuple[str, Q]]:
    return [(t.name, Q(int(t.tensor_type))) for t in gguf.GGUFReader(path).tensors]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fallback")
    small = make_tiny_llama(root / "small", seed=11)
    wide = make_tiny_llama(root / "wide", seed=12, config=WIDE)
    return {
        "small-F16": convert(small, root / "small-f16.gguf").path,
        "small-BF16": convert(small, root / "small-bf16.gguf", out_type="BF16").path,
        "wide-F16": convert(wide, root / "wide-f16.gguf").path,
        "wide-F32": convert(wide, root / "wide-f32.gguf", out_type="F32").path,
    }


def assert_same_bytes(src: Path, tmp_path: Path, options: QuantizeOptions) -> list[tuple[str, Q]]:
    ours, theirs = tmp_path / "numpy.gguf", tmp_path / "llama.cpp.gguf"
    types = quantize(src, ours, options)
    llama_cpp_quantize(src, theirs, options)
    assert types == tensor_types(theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    return types


@pytest.mark.parametrize("ftype", list(FTYPES))
def test_small_model_default_rules(models: dict[str, Path], tmp_path: Path, ftype: str):
    types = dict(assert_same_bytes(models["small-F16"], tmp_path, QuantizeOptions(type=ftype)))
    assert types["blk.0.attn_norm.weight"] == Q.F32  # norms are never quantized
    if ftype in ("TQ1_0", "TQ2_0"):  # rows of 64/128 take no 256-blocks: llama.cpp falls back to Q4_0
        assert types["blk.0.attn_q.weight"] == Q.Q4_0
        assert types["token_embd.weight"] == Q.Q5_0  # Q4_K, which falls back to Q5_0
    elif ftype != "BF16":
        assert types["output.weight"] == Q.Q8_0  # Q6_K's 256-blocks do not fit a 64-wide head


@pytest.mark.parametrize("ftype", ["Q8_0", "Q4_1", "TQ2_0"])
def test_bf16_source(models: dict[str, Path], tmp_path: Path, ftype: str):
    assert_same_bytes(models["small-BF16"], tmp_path, QuantizeOptions(type=ftype))


def wide_options(ftype: str) -> QuantizeOptions:
    """Q8_0 and BF16 need no steering; the others' tied head would be Q6_K (see the refusal test)."""
    return QuantizeOptions(type=ftype, **({} if ftype in ("Q8_0", "BF16") else {"output_tensor_type": "Q8_0"}))


@pytest.mark.parametrize("ftype", list(FTYPES))
def test_wide_model_real_blocks(models: dict[str, Path], tmp_path: Path, ftype: str):
    types = dict(assert_same_bytes(models["wide-F16"], tmp_path, wide_options(ftype)))
    if ftype.startswith("TQ"):
        assert types["blk.1.ffn_down.weight"] == Q[ftype]


@pytest.mark.parametrize("ftype", ["Q5_0", "TQ1_0", "BF16"])
def test_f32_source(models: dict[str, Path], tmp_path: Path, ftype: str):
    assert_same_bytes(models["wide-F32"], tmp_path, wide_options(ftype))


def test_pure_and_leave_output(models: dict[str, Path], tmp_path: Path):
    types = dict(assert_same_bytes(models["wide-F16"], tmp_path, QuantizeOptions(type="TQ1_0", pure=True)))
    assert types["token_embd.weight"] == Q.TQ1_0
    (tmp_path / "numpy.gguf").unlink()
    types = dict(assert_same_bytes(models["small-F16"], tmp_path, QuantizeOptions(type="Q5_1", leave_output_tensor=True,
                                                                                   token_embedding_type="Q8_0")))
    assert types["output.weight"] == Q.F16 and types["token_embd.weight"] == Q.Q8_0


def test_refuses_types_numpy_cannot_encode(models: dict[str, Path], tmp_path: Path):
    """Tied 256-wide embeddings become Q6_K for Q4_0 in llama.cpp: the plan says so, the quantizer refuses."""
    options = QuantizeOptions(type="Q4_0")
    reference = tmp_path / "reference.gguf"
    llama_cpp_quantize(models["wide-F16"], reference, options)
    assert plan(models["wide-F16"], options) == tensor_types(reference)
    assert dict(tensor_types(reference))["token_embd.weight"] == Q.Q6_K
    dest = tmp_path / "out" / "m.gguf"
    dest.parent.mkdir()
    with pytest.raises(GGUFPackError, match=r"token_embd\.weight Q6_K.*--token-embedding-type=Q8_0"):
        quantize(models["wide-F16"], dest, options)
    assert list(dest.parent.iterdir()) == []


def test_refuses_quantized_sources_and_other_types(models: dict[str, Path], tmp_path: Path):
    q8 = tmp_path / "q8.gguf"
    quantize(models["small-F16"], q8, QuantizeOptions(type="Q8_0"))
    with pytest.raises(GGUFPackError, match=r"Q8_0.*F32/F16/BF16 models only"):
        quantize(q8, tmp_path / "again.gguf", QuantizeOptions(type="Q4_0"))
    with pytest.raises(UsageError, match="not 'Q4_K_M'"):
        quantize(models["small-F16"], tmp_path / "k.gguf", QuantizeOptions(type="Q4_K_M"))
    with pytest.raises(UsageError, match="--output-tensor-type Q6_K"):
        quantize(models["small-F16"], tmp_path / "k.gguf", QuantizeOptions(type="Q4_0", output_tensor_type="Q6_K"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q8.gguf"]
