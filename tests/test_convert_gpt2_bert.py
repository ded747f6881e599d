"""The numpy converter on tiny GPT-2 and BERT models, and the WordPiece tokenizer.

Tolerances (GPT-2 logits spread with a standard deviation of about 2):

- GPT-2 F32 without GELU: max |Δlogit| <= 1e-4 and the same argmax everywhere, for the reasons given
  in ``test_convert_llama.py`` (float32 on both sides; about 3e-5 observed). llama.cpp's CPU GELU is
  not float32: it rounds each input to float16 and looks the result up in a float16 table of the tanh
  approximation (``GGML_GELU_FP16`` in ``ggml-cpu/vec.h``), a relative error up to 2^-11 on each of
  the 256 activations per token. So the exact check zeroes the MLP inputs (``gelu_free``: GELU(0) is
  exactly 0 on both sides): attention, norms, positions, biases and head are checked to float32
  precision, the MLP weights by the next test.
- GPT-2 F32 with GELU: max |Δlogit| <= 1e-2. The float16 GELU alone gives 3e-3 to 4e-3 here
  (measured over seeds); a layout bug gives O(0.1..1). The argmax must agree wherever transformers'
  top-two margin exceeds twice the tolerance.
- F16: max |Δlogit| <= 0.1, as for Llama.
- BERT: the pooled embedding's cosine with transformers' (mean or CLS over the last hidden states,
  what sentence-transformers computes) >= 0.9999 at F32 and F16; 1 - cosine is about 1e-7 at F32
  and 4e-7 at F16 here. BERT's GELU is the erf form, which llama.cpp also replaces by its float16
  tanh table; that is most of the F32 residual (max |Δ| about 9e-4 on components up to 3).
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from ggufpack.convert import convert
from ggufpack.errors import GGUFPackError
from tests.helpers.tiny_gpt2_bert import cosine, hf_pooled_embedding, make_tiny_bert, make_tiny_gpt2
from tests.helpers.tinymodels import edit_json, hf_logits, hf_token_ids, llama_cpp_logits, llama_cpp_model
from tests.test_convert_llama import PROMPT, TOKENIZER_TEXT, assert_f32_parity

F16_TOL = 0.1
GELU_F32_TOL = 1e-2
MIN_COSINE = 0.9999
# BERT's special tokens, accents and case, full-width forms, ligatures, Devanagari with only
# nonspacing marks, and the rest of the Llama tokenizer text (Hangul included).
BERT_TEXT = (
    "[CLS] Schloß İstanbul NAÏVE café ǅemal ﬁne ＡＢＣ １２３ नमस्ते [MASK] fills the [SEP] gap; "
    + TOKENIZER_TEXT
)
HANGUL = "안녕하세요, 세계. 빠른 갈색 여우"
DEVANAGARI_SPACING_MARKS = "दुनिया लोमड़ी आलसी कूदती"


def assert_margin_argmax(ours: np.ndarray, ref: np.ndarray, tol: float) -> None:
    """Same argmax wherever transformers' top-two margin exceeds 2 x tol (closer calls may flip)."""
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert (ours.argmax(-1) == ref.argmax(-1))[clear].all()


def fields(path: Path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}


# --- GPT-2 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def gpt2_ids(gpt2: Path) -> list[int]:
    return hf_token_ids(gpt2, PROMPT)


def test_gpt2_f32_matches_transformers_exactly_without_gelu(tmp_path: Path):
    model = make_tiny_gpt2(tmp_path / "model", gelu_free=True, seed=1)
    ids = hf_token_ids(model, PROMPT)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert result.architecture == "gpt2" and result.warnings == ()
    assert_f32_parity(llama_cpp_logits(result.path, ids), hf_logits(model, ids))


@pytest.mark.parametrize(("out_type", "tol"), [("F32", GELU_F32_TOL), ("F16", F16_TOL)])
def test_gpt2_logits_match_transformers(gpt2: Path, gpt2_ids: list[int], tmp_path: Path, out_type: str, tol: float):
    result = convert(gpt2, tmp_path / "m.gguf", out_type=out_type)
    ours, ref = llama_cpp_logits(result.path, gpt2_ids), hf_logits(gpt2, gpt2_ids)
    assert float(np.abs(ours - ref).max()) <= tol
    assert_margin_argmax(ours, ref, tol)


def test_gpt2_untied_head_and_unprefixed_names(tmp_path: Path):
    """An untied ``lm_head`` becomes ``output.weight``; old-style names (no ``transformer.``, causal-mask
    buffers ``attn.bias``/``attn.masked_bias`` stored, as in openai-community/gpt2) work."""
    from safetensors.numpy import load_file, save_file

    model = make_tiny_gpt2(tmp_path / "model", gelu_free=True, seed=2, config={"tie_word_embeddings": False})
    ids = hf_token_ids(model, PROMPT)
    ref = hf_logits(model, ids)
    weights = load_file(model / "model.safetensors")
    assert "lm_head.weight" in weights
    weights = {k.removeprefix("transformer."): v for k, v in weights.items()}
    for i in range(2):
        weights[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 256, 256), dtype=np.float32))
        weights[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert "output.weight" in {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert_f32_parity(llama_cpp_logits(result.path, ids), ref)


def test_gpt2_bf16_checkpoint_keeps_exact_values(gpt2: Path, tmp_path: Path):
    """BF16 weights go through the writer's stored-dtype path, transposes included, bit for bit."""
    import torch
    from transformers import GPT2LMHeadModel

    model = tmp_path / "model"
    shutil.copytree(gpt2, model, ignore=shutil.ignore_patterns("*.safetensors"))
    GPT2LMHeadModel.from_pretrained(gpt2).to(torch.bfloat16).save_pretrained(model, safe_serialization=True)
    auto = convert(model, tmp_path / "auto.gguf", out_type="AUTO")
    assert auto.out_type == "BF16"
    wide = {t.name: np.array(t.data) for t in gguf.GGUFReader(convert(model, tmp_path / "f32.gguf",
                                                                      out_type="F32").path).tensors}
    narrow = gguf.GGUFReader(auto.path).tensors
    assert {t.name: t.tensor_type for t in narrow}["blk.0.attn_qkv.weight"] == gguf.GGMLQuantizationType.BF16
    for t in narrow:
        data = np.array(t.data)
        if t.tensor_type == gguf.GGMLQuantizationType.BF16:
            data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(wide[t.name].shape)
        assert np.array_equal(data, wide[t.name]), t.name


def test_gpt2_metadata_and_layout(gpt2: Path, tmp_path: Path):
    result = convert(gpt2, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(result.path)
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order: (in, out)
    assert "output.weight" not in shapes  # tied: llama.cpp reuses token_embd
    assert shapes["blk.0.attn_qkv.weight"] == (64, 192) and shapes["blk.0.ffn_down.weight"] == (256, 64)
    value = fields(result.path)
    assert value["gpt2.context_length"] == 256 and value["gpt2.feed_forward_length"] == 256
    assert value["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
    assert value["tokenizer.ggml.model"] == "gpt2" and value["tokenizer.ggml.pre"] == "gpt-2"


def test_gpt2_tokenizer_parity(gpt2: Path, tmp_path: Path):
    result = convert(gpt2, tmp_path / "m.gguf")
    llm = llama_cpp_model(result.path)
    text = TOKENIZER_TEXT + "<|endoftext|>"
    ours = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    assert ours == hf_token_ids(gpt2, text)
    assert llm.detokenize(ours, special=True).decode("utf-8") == text


@pytest.mark.parametrize(
    ("change", "message"),
    [({"scale_attn_by_inverse_layer_idx": True}, "scale_attn"), ({"activation_function": "relu"}, "'relu'")],
)
def test_gpt2_unsupported_config_is_refused(gpt2: Path, tmp_path: Path, change: dict, message: str):
    model = tmp_path / "model"
    shutil.copytree(gpt2, model)
    edit_json(model / "config.json", **change)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GGUFPackError, match=message):
        convert(model, out / "m.gguf")
    assert list(out.iterdir()) == []


# --- BERT ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), pooling="mean")


def llama_cpp_embedding(gguf_path: Path, text: str, pooling: int | None = None) -> np.ndarray:
    """llama.cpp's pooled embedding of ``text`` ([CLS] ... [SEP] added), unnormalized."""
    extra = {} if pooling is None else {"pooling_type": pooling}
    llm = llama_cpp.Llama(str(gguf_path), embedding=True, n_ctx=128, n_threads=2, verbose=False, **extra)
    return np.array(llm.embed(text, normalize=False), dtype=np.float32)


@pytest.mark.parametrize("out_type", ["F32", "F16"])
def test_bert_mean_pooled_embedding_matches_transformers(bert: Path, tmp_path: Path, out_type: str):
    result = convert(bert, tmp_path / "m.gguf", out_type=out_type)
    assert result.architecture == "bert" and result.warnings == ()
    ids = hf_token_ids(bert, PROMPT)
    assert llama_cpp_model(result.path).tokenize(PROMPT.encode("utf-8"), add_bos=True) == ids
    assert cosine(llama_cpp_embedding(result.path, PROMPT), hf_pooled_embedding(bert, ids, "mean")) >= MIN_COSINE


def test_bert_cls_pooling(tmp_path: Path):
    model = make_tiny_bert(tmp_path / "model", pooling="cls", seed=1)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert fields(result.path)["bert.pooling_type"] == gguf.PoolingType.CLS
    ids = hf_token_ids(model, PROMPT)
    ours = llama_cpp_embedding(result.path, PROMPT)
    assert cosine(ours, hf_pooled_embedding(model, ids, "cls")) >= MIN_COSINE
    assert cosine(ours, hf_pooled_embedding(model, ids, "mean")) < 0.99  # the pooling really is CLS


def test_bert_for_masked_lm_drops_the_head_and_warns(tmp_path: Path):
    model = make_tiny_bert(tmp_path / "model", pooling=None, architecture="BertForMaskedLM", seed=2)
    result = convert(model, tmp_path / "m.gguf", out_type="F32")
    assert any("no sentence-transformers pooling" in w for w in result.warnings)
    assert any("cls.*" in w for w in result.warnings)
    assert "bert.pooling_type" not in fields(result.path)
    names = {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert "blk.1.layer_output_norm.bias" in names and not any("cls" in n for n in names)
    # the encoder under "bert." is intact: pooling chosen at run time matches transformers' BertModel
    ours = llama_cpp_embedding(result.path, PROMPT, pooling=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    assert cosine(ours, hf_pooled_embedding(model, hf_token_ids(model, PROMPT), "mean")) >= MIN_COSINE


def test_bert_metadata(bert: Path, tmp_path: Path):
    result = convert(bert, tmp_path / "m.gguf")
    value = fields(result.path)
    tok = {t["content"]: t["id"] for t in json.loads((bert / "tokenizer.json").read_text("utf-8"))["added_tokens"]}
    assert value["bert.attention.causal"] is False
    assert value["bert.pooling_type"] == gguf.PoolingType.MEAN
    assert value["tokenizer.ggml.token_type_count"] == 2
    assert value["tokenizer.ggml.model"] == "bert"
    assert value["tokenizer.ggml.normalizer.lowercase"] is True
    assert value["tokenizer.ggml.normalizer.strip_accents"] is True
    # ids from this vocabulary, not llama.cpp's defaults (Google BERT's 101/102/100/0/103)
    assert value["tokenizer.ggml.bos_token_id"] == tok["[CLS]"]
    assert value["tokenizer.ggml.seperator_token_id"] == value["tokenizer.ggml.eos_token_id"] == tok["[SEP]"]
    assert value["tokenizer.ggml.unknown_token_id"] == tok["[UNK]"]
    assert value["tokenizer.ggml.padding_token_id"] == tok["[PAD]"]
    assert value["tokenizer.ggml.mask_token_id"] == tok["[MASK]"]
    tokens, types = value["tokenizer.ggml.tokens"], value["tokenizer.ggml.token_type"]
    assert types[tok["[UNK]"]] == gguf.TokenType.UNKNOWN and types[tok["[MASK]"]] == gguf.TokenType.CONTROL
    vocab = json.loads((bert / "tokenizer.json").read_text("utf-8"))["model"]["vocab"]
    continuation = next(t for t in vocab if t.startswith("##"))
    word = next(t for t in vocab if not t.startswith("##") and t not in tok)
    assert tokens[vocab[continuation]] == continuation[2:] and tokens[vocab[word]] == "\u2581" + word
    names = {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert {"token_types.weight", "position_embd.weight", "token_embd_norm.bias", "blk.0.attn_q.bias"} <= names
    assert not any("pooler" in n for n in names)


@pytest.mark.parametrize(("mode", "message"), [({"pooling_mode_max_tokens": True}, "max"),
                                               ({"pooling_mode_cls_token": True}, "mean + cls")])
def test_bert_unsupported_pooling_is_refused(bert: Path, tmp_path: Path, mode: dict, message: str):
    model = tmp_path / "model"
    shutil.copytree(bert, model)
    config = json.loads((model / "1_Pooling" / "config.json").read_text("utf-8"))
    (model / "1_Pooling" / "config.json").write_text(json.dumps({**config, **mode}), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GGUFPackError, match=re.escape(message)):
        convert(model, out / "m.gguf")
    assert list(out.iterdir()) == []


def test_bert_dense_module_after_pooling_is_a_warning(bert: Path, tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(bert, model)
    modules = json.loads((model / "modules.json").read_text("utf-8"))
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    result = convert(model, tmp_path / "m.gguf")
    assert [w for w in result.warnings if "Dense" in w]
    assert fields(result.path)["bert.pooling_type"] == gguf.PoolingType.MEAN


# --- WordPiece tokenizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["uncased", "cased"])
def wpm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, llama_cpp.Llama]:
    model = make_tiny_bert(tmp_path_factory.mktemp("bert-tok"), lowercase=request.param)
    result = convert(model, model / "m.gguf")
    return model, llama_cpp.Llama(str(result.path), vocab_only=True, verbose=False)


def wpm_ids(llm: llama_cpp.Llama, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def test_wordpiece_tokenizer_parity(wpm: tuple[Path, llama_cpp.Llama]):
    """Equal ids on the whole text; uncased, the Hangul is checked in the known-differences test below."""
    model, llm = wpm
    uncased = json.loads((model / "tokenizer.json").read_text("utf-8"))["normalizer"]["lowercase"]
    text = BERT_TEXT.replace("안녕하세요. ", "") if uncased else BERT_TEXT
    assert ("안" in text) != uncased
    hf = hf_token_ids(model, text)
    assert hf.count(hf[-1]) == 2 and len(hf) > 100  # [SEP] from the text and the closing one
    assert wpm_ids(llm, text) == hf


def test_wordpiece_known_differences_of_llama_cpp(wpm: tuple[Path, llama_cpp.Llama]):
    """Where llama.cpp's WPM tokenizer cannot match Hugging Face's (src/llama-vocab.cpp, unicode.cpp).

    1. Words over max_input_chars_per_word (100) characters: [UNK] for HF, pieces for llama.cpp.
    2. With strip_accents (uncased models), llama.cpp's NFD maps a code point to one code point, so
       a Hangul syllable becomes its leading consonant alone, where HF decomposes it into all its jamo.
    3. With strip_accents, llama.cpp drops every combining mark (\\p{M}); HF only nonspacing ones (Mn),
       so spacing marks (Mc, e.g. Devanagari vowel signs) survive in HF only.
    Each is asserted exactly, so that a llama.cpp that fixes one makes this test fail and the docs move.
    """
    model, llm = wpm
    uncased = json.loads((model / "tokenizer.json").read_text("utf-8"))["normalizer"]["lowercase"]
    unk_id = llm.tokenize(b"[UNK]", add_bos=False, special=True)[0]
    long_word = "ab" * 60
    assert hf_token_ids(model, long_word)[1:-1] == [unk_id]
    assert len(wpm_ids(llm, long_word)) > 3 and unk_id not in wpm_ids(llm, long_word)
    leading_jamo = "".join(unicodedata.normalize("NFD", c)[0] for c in HANGUL)
    without_mc = "".join(c for c in DEVANAGARI_SPACING_MARKS if unicodedata.category(c) != "Mc")
    if uncased:
        assert wpm_ids(llm, HANGUL) != hf_token_ids(model, HANGUL)
        assert wpm_ids(llm, HANGUL) == hf_token_ids(model, leading_jamo)
        assert wpm_ids(llm, DEVANAGARI_SPACING_MARKS) != hf_token_ids(model, DEVANAGARI_SPACING_MARKS)
        assert wpm_ids(llm, DEVANAGARI_SPACING_MARKS) == hf_token_ids(model, without_mc)
    else:  # no accent stripping, no difference
        assert wpm_ids(llm, HANGUL) == hf_token_ids(model, HANGUL)
        assert wpm_ids(llm, DEVANAGARI_SPACING_MARKS) == hf_token_ids(model, DEVANAGARI_SPACING_MARKS)
