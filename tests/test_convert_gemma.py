"""Gemma, Gemma 2 and Gemma 3 (text, and the text model of the multimodal wrapper): llama.cpp must
compute what transformers computes.

Tolerances, and why F32 is looser than the Llama tests' 1e-4:

- llama.cpp's CPU GELU (every Gemma MLP) rounds its float32 input to float16 and reads a float16
  table (``GGML_GELU_FP16`` in ``ggml-cpu/vec.h``): up to 2^-11 relative error per activation,
  ~2e-3..7e-3 on the logits after two layers. So F32 is checked twice:
  * against transformers with that GELU emulated (:func:`tests.helpers.tiny_gemma.ggml_gelu`):
    max |Δlogit| <= 2e-3 and the same argmax everywhere. What remains is float32 summation order,
    amplified where an input sits on a float16 rounding boundary and the two sides round it to
    neighbouring halves (observed 8e-6 for Gemma 3, 3e-4 for Gemma 2 and 7e-4 for Gemma, which has
    the widest activations);
  * against plain transformers: max |Δlogit| <= 2e-2 (3x the worst observed), far below what a
    conversion bug gives (a missing norm offset, query scale or window: O(0.1..1) and more).
- F16: <= 0.1 as for Llama, argmax equal wherever transformers' top-two margin exceeds 0.2.

The prompt (55 tokens) is much longer than the tiny models' sliding window (8), and
:func:`test_the_window_matters` shows that the window changes transformers' logits far beyond the
tolerances, so the window logic is really exercised.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggufpack.convert import convert, supported_architectures
from ggufpack.errors import GGUFPackError
from tests.helpers.tiny_gemma import hf_logits_both_gelus, make_tiny_gemma
from tests.helpers.tinymodels import edit_json, hf_logits, hf_token_ids, llama_cpp_logits

F32_TOL = 2e-2
F32_EMULATED_TOL = 2e-3
F16_TOL = 0.1
WINDOW = 8
PROMPT = "The quick brown fox 🦙 jumps über 1234 Hunde.   Привет, 世界!\n\n  end"

VARIANTS = {  # id -> (model_type, multimodal, GGUF architecture)
    "gemma": ("gemma", False, "gemma"),
    "gemma2": ("gemma2", False, "gemma2"),
    "gemma3": ("gemma3_text", False, "gemma3"),
    "gemma3-multimodal": ("gemma3_text", True, "gemma3"),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    model_type, multimodal, _ = VARIANTS[request.param]
    return request.param, make_tiny_gemma(tmp_path_factory.mktemp(request.param), model_type, multimodal=multimodal)


@pytest.fixture(scope="module")
def prompt_ids(tiny: tuple[str, Path]) -> list[int]:
    ids = hf_token_ids(tiny[1], PROMPT)
    assert len(ids) > 4 * WINDOW
    return ids


@pytest.fixture(scope="module")
def references(tiny: tuple[str, Path], prompt_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return hf_logits_both_gelus(tiny[1], prompt_ids)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def test_f32_logits_match_transformers(tiny, tmp_path: Path, prompt_ids, references):
    name, model = tiny
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert result.architecture == VARIANTS[name][2]
    assert bool(result.warnings) == VARIANTS[name][1]  # only the multimodal wrapper warns (vision left out)
    ours = llama_cpp_logits(result.path, prompt_ids)
    plain, emulated = references
    assert max_diff(ours, emulated) <= F32_EMULATED_TOL
    assert (ours.argmax(-1) == emulated.argmax(-1)).all()
    assert max_diff(ours, plain) <= F32_TOL


def test_f16_logits_match_transformers(tiny, tmp_path: Path, prompt_ids, references):
    result = convert(tiny[1], tmp_path / "m.gguf", out_type="F16")
    ours = llama_cpp_logits(result.path, prompt_ids)
    plain, _ = references
    assert max_diff(ours, plain) <= F16_TOL
    top2 = np.sort(plain, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * F16_TOL
    assert (ours.argmax(-1) == plain.argmax(-1))[clear].all()


def test_metadata(tiny, tmp_path: Path):
    name, model = tiny
    arch = VARIANTS[name][2]
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    reader = gguf.GGUFReader(result.path)
    value = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    assert value["tokenizer.ggml.model"] == "llama"
    assert value["tokenizer.ggml.add_space_prefix"] is False
    assert value[f"{arch}.attention.key_length"] == 32
    assert "output.weight" not in tensors  # tied
    # the norm offset: GGUF norm = 1 + HF weight
    from safetensors import safe_open

    hf_name = ("language_model." if VARIANTS[name][1] else "") + "model.layers.0.input_layernorm.weight"
    with safe_open(model / "model.safetensors", "np") as f:
        hf_norm = f.get_tensor(hf_name)
    assert np.array_equal(np.array(tensors["blk.0.attn_norm.weight"].data), hf_norm + np.float32(1))
    if arch == "gemma":
        assert not any(k.startswith("gemma.attention.sliding") for k in value)
        return
    assert value[f"{arch}.attention.sliding_window"] == WINDOW
    assert list(value[f"{arch}.attention.sliding_window_pattern"]) == [True, False]
    assert "blk.0.post_ffw_norm.weight" in tensors and "blk.0.post_attention_norm.weight" in tensors
    if arch == "gemma2":
        assert value["gemma2.attn_logit_softcapping"] == pytest.approx(50.0)
        assert value["gemma2.final_logit_softcapping"] == pytest.approx(30.0)
    else:
        assert value["gemma3.rope.freq_base"] == pytest.approx(1e6)
        assert value["gemma3.rope.freq_base_swa"] == pytest.approx(1e4)
        assert "blk.1.attn_q_norm.weight" in tensors and "gemma3.final_logit_softcapping" not in value


def test_the_window_matters(tiny, prompt_ids, references, tmp_path: Path):
    """Without its sliding window, transformers' logits past the window move far beyond the tolerances."""
    name, model = tiny
    if name == "gemma":
        pytest.skip("Gemma 1 has no sliding window")
    unwindowed = tmp_path / "model"
    shutil.copytree(model, unwindowed)
    config = unwindowed / "config.json"
    if VARIANTS[name][1]:
        import json

        data = json.loads(config.read_text(encoding="utf-8"))
        data["text_config"]["sliding_window"] = 4096
        config.write_text(json.dumps(data), encoding="utf-8")
    else:
        edit_json(config, sliding_window=4096)
    moved = np.abs(hf_logits(unwindowed, prompt_ids) - references[0]).max(-1)
    assert moved[:WINDOW].max() < 1e-5 < 100 * F32_TOL < moved[WINDOW:].max()


# --- variants and refusals ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_type", "config", "drop"),
    [
        ("gemma3_text", {"rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}},
            "final_logit_softcapping": 15.0, "tie_word_embeddings": False, "query_pre_attn_scalar": 32}, ()),
        # a transformers 4.x config: no layer_types, so the converter derives Gemma 2's alternation
        ("gemma2", {"num_hidden_layers": 3, "layer_types": None, "query_pre_attn_scalar": 32}, ("layer_types",)),
    ],
    ids=["gemma3-linear-rope-softcap-untied", "gemma2-4x-pattern"],
)
def test_variants_f32_parity(tmp_path: Path, model_type: str, config: dict, drop: tuple[str, ...]):
    model = make_tiny_gemma(tmp_path / "model", model_type, config=config, seed=1)
    edit_json(model / "config.json", **dict.fromkeys(drop))
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    names = {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert ("output.weight" in names) == (config.get("tie_word_embeddings") is False)
    _, emulated = hf_logits_both_gelus(model, ids)
    ours = llama_cpp_logits(result.path, ids)
    assert max_diff(ours, emulated) <= F32_EMULATED_TOL
    assert (ours.argmax(-1) == emulated.argmax(-1)).all()


@pytest.fixture(scope="module")
def gemma2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gemma(tmp_path_factory.mktemp("gemma2-errors"), "gemma2", seed=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attn_logit_softcapping": None}, "attn_logit_softcapping"),
        ({"layer_types": ["sliding_attention"]}, "1 layer_types for 2 layers"),
        ({"layer_types": ["sliding_attention", "chunked_attention"]}, "'chunked_attention'"),
        ({"tie_word_embeddings": False}, "untied lm_head"),
    ],
    ids=["no-softcap", "short-layer-types", "unknown-layer-type", "untied"],
)
def test_refusals_are_clear_errors(gemma2_dir: Path, tmp_path: Path, change: dict, message: str):
    model = tmp_path / "model"
    shutil.copytree(gemma2_dir, model)
    edit_json(model / "config.json", **change)  # None deletes the key
    if change.get("tie_word_embeddings") is False:
        from safetensors.numpy import load_file, save_file

        weights = load_file(model / "model.safetensors")
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"] * 2
        save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GGUFPackError, match=message.replace("(", r"\(")):
        convert(model, out / "m.gguf")
    assert list(out.iterdir()) == []


def test_table_lists_gemma():
    assert {"GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
            "Gemma3ForConditionalGeneration"} <= set(supported_architectures())
