"""Qwen2, Qwen3 and Phi-3 conversion: llama.cpp must compute what transformers computes.

Same tolerances as ``test_convert_llama.py`` (see its docstring for the reasoning): F32 max
|Δlogit| <= 1e-4 with the same argmax everywhere, F16 <= 0.1 with the same argmax wherever
transformers' top-two margin exceeds 0.2. Unlike the Llama tests, the tiny models here have random
norm weights and biases (the helper randomises every 1-D parameter), so q/k/v biases, Qwen3's q/k
norms and the layer norms are all exercised.

The variants change llama.cpp's graph: tied embeddings (no ``output.weight``), Qwen3's free
``head_dim``, YaRN, Phi-3's partial rotary and LongRoPE with the short and with the long factors.
LongRoPE variants are checked at F32 only: their attention factor sharpens the tiny random model's
attention so much that F16 rounding alone moves logits by up to ~0.5.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from ggufpack.convert import convert
from ggufpack.errors import GGUFPackError
from tests.helpers.tiny_qwen_phi import make_tiny_model
from tests.helpers.tinymodels import edit_json, hf_logits, hf_token_ids, llama_cpp_logits, llama_cpp_model

F32_TOL = 1e-4
F16_TOL = 0.1
PROMPT = "The quick brown fox 🦙 jumps über 1234 Hunde.   Привет, 世界!\n\n  end"  # 44 tokens
# No special token inside: llama.cpp strips the spaces after one in any model named "phi3" (real Phi-3
# tokenizers mark theirs rstrip), which the tiny tokenizer's special tokens are not.
TOKENIZER_TEXT = (
    "Hello world! It's 2024: 3.14159 and 1234567 apples.\n\n\t  indented    spaces\r\n"
    "Grüße aus Köln — ça va? Привет мир. 你好，世界。こんにちは。🚀🦙 😶‍🌫️ 👍🏽 🇩🇪   trailing   "
)

#: model_type → (GGUF architecture, config of the base model)
BASE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {"head_dim": 16}),
    "phi3": ("phi3", {}),
}


def longrope(original: int, rotary_dims: int, **extra: Any) -> dict[str, Any]:
    """Phi-3 config keys for LongRoPE with distinct, irregular long and short factors."""
    rng = np.random.default_rng(original)
    half = rotary_dims // 2
    params = {
        "rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": original,
        "long_factor": [round(float(x), 3) for x in rng.uniform(1.0, 16.0, half)],
        "short_factor": [round(float(x), 3) for x in rng.uniform(1.0, 3.0, half)],
        **extra,
    }
    # transformers' Phi3Config takes original_max_position_embeddings from the top level
    return {"max_position_embeddings": 4096, "original_max_position_embeddings": original, "rope_parameters": params}


def yarn(theta: float) -> dict[str, Any]:
    return {"max_position_embeddings": 128, "rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": theta}}


def max_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max())


def assert_f32_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    assert max_diff(ours, ref) <= F32_TOL, f"max |Δlogit| {max_diff(ours, ref):.3g} > {F32_TOL}"
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def assert_f16_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    assert max_diff(ours, ref) <= F16_TOL, f"max |Δlogit| {max_diff(ours, ref):.3g} > {F16_TOL}"
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * F16_TOL
    assert (ours.argmax(-1) == ref.argmax(-1))[clear].all()


def metadata(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """A GGUF file's key/values and its tensors' numpy-order shapes."""
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.")}
    return fields, {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}


@pytest.fixture(scope="module", params=sorted(BASE_MODELS))
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(model_type, model directory, prompt ids, transformers' logits) for each base model."""
    model_type = request.param
    model = make_tiny_model(tmp_path_factory.mktemp(f"tiny-{model_type}"), model_type,
                            config=BASE_MODELS[model_type][1])
    ids = hf_token_ids(model, PROMPT)
    return model_type, model, ids, hf_logits(model, ids)


# --- numbers -------------------------------------------------------------------------------------


def test_f32_and_f16_logits_match_transformers(base, tmp_path: Path):
    model_type, model, ids, reference = base
    f32 = convert(model, tmp_path / "f32.gguf", out_type="F32")
    assert f32.architecture == BASE_MODELS[model_type][0] and f32.warnings == ()
    assert_f32_parity(llama_cpp_logits(f32.path, ids), reference)
    f16 = convert(model, tmp_path / "f16.gguf", out_type="F16")
    assert_f16_parity(llama_cpp_logits(f16.path, ids), reference)


def test_tokenization_matches_transformers(base, tmp_path: Path):
    _, model, _, _ = base
    result = convert(model, tmp_path / "m.gguf", out_type="F16")
    llm = llama_cpp_model(result.path)
    for text in (PROMPT, TOKENIZER_TEXT):
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == hf_token_ids(model, text)


def test_q8_0_loads_and_runs(base, tmp_path: Path):
    _, model, ids, reference = base
    result = convert(model, tmp_path / "q8.gguf", out_type="Q8_0")
    # Coarse: 8-bit blocks; this catches layout errors (a misplaced fused half), not rounding.
    assert max_diff(llama_cpp_logits(result.path, ids), reference) < 1.5


@pytest.mark.parametrize(
    ("model_type", "config"),
    [
        ("qwen2", {"tie_word_embeddings": True}),
        ("qwen2", yarn(10000.0)),
        ("qwen3", {"head_dim": 32, "num_key_value_heads": 1}),
        ("qwen3", {"head_dim": 32, **yarn(1000000.0)}),
        ("phi3", {"tie_word_embeddings": True,
                  "rope_parameters": {"rope_theta": 10000.0, "partial_rotary_factor": 0.5}}),
        ("phi3", longrope(1024, 16)),  # the prompt fits the original context: short factors on both sides
        ("phi3", longrope(16, 8, partial_rotary_factor=0.5)),  # it does not: long factors on both sides
    ],
    ids=["qwen2-tied", "qwen2-yarn", "qwen3-head-dim-32-mqa", "qwen3-yarn", "phi3-partial-rotary-tied",
         "phi3-longrope-short", "phi3-longrope-long"],
)
def test_variants_f32_parity(tmp_path: Path, model_type: str, config: dict[str, Any]):
    model = make_tiny_model(tmp_path / f"tiny-{model_type}", model_type, config=config, seed=1)
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert result.warnings == ()
    _, shapes = metadata(result.path)
    assert ("output.weight" in shapes) != bool(config.get("tie_word_embeddings"))
    assert_f32_parity(llama_cpp_logits(result.path, ids), hf_logits(model, ids))


@pytest.mark.parametrize(
    ("model_type", "config"),
    [("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}),
     ("phi3", {"sliding_window": 8})],
)
def test_sliding_window_is_a_warning_and_exact_inside_the_window(tmp_path: Path, model_type: str, config: dict):
    model = make_tiny_model(tmp_path / f"tiny-{model_type}", model_type, config=config)
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert len(result.warnings) == 1 and "sliding" in result.warnings[0] and "8" in result.warnings[0]
    ours, reference = llama_cpp_logits(result.path, ids), hf_logits(model, ids)
    # The warning is accurate: the first 8 positions see their whole past either way; later ones do not.
    assert_f32_parity(ours[:8], reference[:8])
    assert max_diff(ours[8:], reference[8:]) > 0.1


# --- metadata ------------------------------------------------------------------------------------


def test_qwen_metadata(tmp_path: Path):
    qwen2 = make_tiny_model(tmp_path / "qwen2", "qwen2")
    fields, shapes = metadata(convert(qwen2, tmp_path / "qwen2.gguf", out_type="F32").path)
    assert fields["general.architecture"] == "qwen2"
    assert fields["qwen2.rope.dimension_count"] == 16 and fields["qwen2.attention.head_count_kv"] == 2
    assert fields["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert shapes["blk.1.attn_q.bias"] == (64,) and shapes["blk.1.attn_k.bias"] == (32,)
    assert "qwen2.attention.key_length" not in fields and "blk.0.attn_output.bias" not in shapes

    qwen3 = make_tiny_model(tmp_path / "qwen3", "qwen3", config={"head_dim": 32, **yarn(1e6)})
    fields, shapes = metadata(convert(qwen3, tmp_path / "qwen3.gguf", out_type="F32").path)
    assert fields["general.architecture"] == "qwen3"
    assert fields["qwen3.attention.key_length"] == fields["qwen3.attention.value_length"] == 32
    assert fields["qwen3.rope.dimension_count"] == 32 and fields["qwen3.rope.freq_base"] == 1e6
    assert fields["qwen3.rope.scaling.type"] == "yarn" and fields["qwen3.rope.scaling.factor"] == 4.0
    assert fields["qwen3.rope.scaling.original_context_length"] == 32
    assert shapes["blk.0.attn_q_norm.weight"] == shapes["blk.0.attn_k_norm.weight"] == (32,)
    assert shapes["blk.0.attn_q.weight"] == (128, 64) and "blk.0.attn_q.bias" not in shapes


def test_phi3_metadata(tmp_path: Path):
    model = make_tiny_model(tmp_path / "phi3", "phi3", config=longrope(16, 8, partial_rotary_factor=0.5))
    fields, shapes = metadata(convert(model, tmp_path / "phi3.gguf", out_type="F16").path)
    assert fields["general.architecture"] == "phi3"
    assert fields["phi3.rope.dimension_count"] == 8  # half of the 16-wide heads rotate
    assert fields["phi3.rope.scaling.original_context_length"] == 16
    assert fields["phi3.rope.scaling.attn_factor"] == pytest.approx(math.sqrt(1 + math.log(4096 / 16) / math.log(16)))
    assert shapes["blk.0.attn_qkv.weight"] == (64 + 2 * 32, 64)
    assert shapes["blk.0.ffn_up.weight"] == (2 * 128, 64) and "blk.0.ffn_gate.weight" not in shapes
    assert shapes["rope_factors_long.weight"] == shapes["rope_factors_short.weight"] == (4,)
    reader = gguf.GGUFReader(tmp_path / "phi3.gguf")
    factors = {t.name: t for t in reader.tensors if t.name.startswith("rope_factors")}
    assert factors["rope_factors_long.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    params = rope_parameters(model)
    for kind in ("long", "short"):
        assert np.array_equal(factors[f"rope_factors_{kind}.weight"].data,
                              np.asarray(params[f"{kind}_factor"], dtype=np.float32))


def rope_parameters(model: Path) -> dict[str, Any]:
    return json.loads((model / "config.json").read_text(encoding="utf-8"))["rope_parameters"]


# --- errors --------------------------------------------------------------------------------------


def converting_fails(model: Path, dest: Path, match: str) -> None:
    with pytest.raises(GGUFPackError, match=match):
        convert(model, dest, out_type="F32")
    assert not dest.exists() and list(dest.parent.iterdir()) == [model]


def test_unrunnable_checkpoints_are_refused(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    # llama.cpp's qwen2 graph sizes q and the output projection by hidden_size
    wide = make_tiny_model(out / "qwen2", "qwen2", config={"head_dim": 32})
    converting_fails(wide, out / "m.gguf", "head_dim x num_attention_heads = 128 differs from hidden_size")
    shutil.rmtree(wide)
    # llama.cpp's qwen3 graph loads no output-projection bias
    biased = make_tiny_model(out / "qwen3", "qwen3", config={"head_dim": 16, "attention_bias": True})
    converting_fails(biased, out / "m.gguf", "unexpected tensor 'model.layers.0.self_attn.o_proj.bias'")
    shutil.rmtree(biased)
    # longrope factors must cover the rotary dimensions
    phi = make_tiny_model(out / "phi3", "phi3", config=longrope(16, 16))
    edit_json(phi / "config.json", rope_parameters={**rope_parameters(phi), "short_factor": [1.0, 2.0]})
    converting_fails(phi, out / "m.gguf", "short_factor with 8 values")
