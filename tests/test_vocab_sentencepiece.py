"""SentencePiece ``tokenizer.model`` → ``llama`` vocab: the reader, the metadata, and tokenizer parity.

Parity: llama.cpp (``vocab_only``) must tokenize like the Hugging Face tokenizer that transformers
builds from the same ``tokenizer.model``, on multilingual text with whitespace runs, digits, emoji
and special tokens.

One difference is llama.cpp's and cannot be fixed by metadata: for tokenizers with a space prefix
(Llama 2 style), llama.cpp also prefixes the text that follows each special token, where
SentencePiece and transformers' tokenizers do not. The Llama-style text therefore puts its special
tokens where no text follows them; Gemma style has no prefix and is checked with specials anywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest

from ggufpack.convert import convert
from ggufpack.convert.vocab.sentencepiece import load_sentencepiece_vocab, read_model_proto
from ggufpack.errors import GGUFPackError
from tests.helpers.tiny_gemma import make_tiny_gemma
from tests.helpers.tiny_spm import SPECIALS_TEXT, save_spm_tokenizer, train_spm
from tests.helpers.tinymodels import edit_json, hf_token_ids, make_tiny_llama
from tests.test_convert_llama import TOKENIZER_TEXT

# The Llama tests' text; its <|...|> markers are plain text to these tokenizers.
MULTILINGUAL = TOKENIZER_TEXT


@pytest.fixture(scope="module")
def gemma_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gemma-tok")
    save_spm_tokenizer(out, "gemma")
    return out


def llama_cpp_tokens(gguf_path: Path, text: str) -> tuple[list[int], str]:
    """llama.cpp's ids for ``text`` (BOS as the model asks, specials parsed) and their detokenization."""
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    return ids, llm.detokenize(ids[1:], special=True).decode("utf-8")


# --- the reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["gemma", "llama"])
def test_reader_matches_sentencepiece_descriptor(tmp_path: Path, style: str):
    from sentencepiece import sentencepiece_model_pb2

    path = train_spm(tmp_path, style)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    ours = read_model_proto(path.read_bytes())
    assert ours.pieces == [p.piece for p in proto.pieces]
    assert ours.scores == [p.score for p in proto.pieces]
    assert ours.types == [int(p.type) for p in proto.pieces]
    assert ours.model_type == proto.trainer_spec.model_type == 2
    assert ours.add_dummy_prefix == proto.normalizer_spec.add_dummy_prefix == (style == "llama")


def test_token_types_scores_and_padding(gemma_tok: Path):
    warnings: list[str] = []
    vocab = load_sentencepiece_vocab(gemma_tok, 640, warnings)
    assert warnings == []
    assert vocab.model == "llama" and vocab.pre == "default" and len(vocab.tokens) == len(vocab.scores) == 640
    kind = dict(zip(vocab.tokens, vocab.token_types, strict=True))
    T = gguf.TokenType
    assert (kind["<pad>"], kind["<eos>"], kind["<bos>"], kind["<mask>"]) == (T.CONTROL,) * 4
    assert kind["<unk>"] == T.UNKNOWN and kind["<0x0A>"] == T.BYTE and kind["<0xFF>"] == T.BYTE
    assert kind["<start_of_turn>"] == T.USER_DEFINED
    assert vocab.tokens[600:] == [f"[PAD{i}]" for i in range(600, 640)]
    assert set(vocab.token_types[600:]) == {T.UNUSED}
    normal = [s for s, t in zip(vocab.scores, vocab.token_types, strict=True) if t == T.NORMAL]
    assert normal == sorted(normal, reverse=True) and len(set(normal)) > 100  # BPE merge ranks, kept
    assert vocab.add_space_prefix is False


def test_space_prefix_falls_back_to_the_model(gemma_tok: Path, tmp_path: Path):
    """Without tokenizer.json, ``add_dummy_prefix`` decides; with it, the HF pipeline does."""
    only_model = tmp_path / "only-model"
    only_model.mkdir()
    for style in ("gemma", "llama"):
        train_spm(only_model, style)
        assert load_sentencepiece_vocab(only_model, None, []).add_space_prefix is (style == "llama")
    mixed = tmp_path / "mixed"
    shutil.copytree(gemma_tok, mixed)
    train_spm(mixed, "llama")  # a model with the dummy prefix, a tokenizer.json without
    assert load_sentencepiece_vocab(mixed, None, []).add_space_prefix is False


def test_unigram_model_warns(tmp_path: Path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(MULTILINGUAL * 20, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=100, hard_vocab_limit=False,
        model_type="unigram", minloglevel=2, num_threads=1,
    )
    warnings: list[str] = []
    load_sentencepiece_vocab(tmp_path, None, warnings)
    assert len(warnings) == 1 and "not BPE" in warnings[0]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_broken_model_is_a_clear_error(gemma_tok: Path, tmp_path: Path, damage: str):
    model = tmp_path / "tok"
    shutil.copytree(gemma_tok, model)
    path = model / "tokenizer.model"
    data = {"truncated": path.read_bytes()[:-100], "garbage": b"\x0f\xff\xff", "empty": b""}[damage]
    path.write_bytes(data)
    with pytest.raises(GGUFPackError, match=r"tokenizer\.model"):
        load_sentencepiece_vocab(model, None, [])


def test_more_tokens_than_the_model_is_an_error(gemma_tok: Path):
    with pytest.raises(GGUFPackError, match="more than the model's vocab_size 500"):
        load_sentencepiece_vocab(gemma_tok, 500, [])


# --- parity with the HF tokenizer, through llama.cpp --------------------------------------------


def test_gemma_tokenizer_parity(tmp_path: Path):
    model = make_tiny_gemma(tmp_path / "model", "gemma", seed=3)
    result = convert(model, tmp_path / "m.gguf")
    fields = gguf.GGUFReader(result.path).fields
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 2
    assert "<start_of_turn>" in fields["tokenizer.chat_template"].contents()
    for text in (MULTILINGUAL + SPECIALS_TEXT["gemma"] + MULTILINGUAL, SPECIALS_TEXT["gemma"]):
        ours, back = llama_cpp_tokens(result.path, text)
        assert ours == hf_token_ids(model, text)
        assert back == text


def test_llama_with_spm_tokenizer_converts_and_tokenizes_identically(tmp_path: Path):
    model = make_tiny_llama(tmp_path / "model", vocab_size=640)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    vocab_size = json.loads((model / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    ids = save_spm_tokenizer(model, "llama", vocab_size)
    for name in ("config.json", "generation_config.json"):
        edit_json(model / name, bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=None)
    result = convert(model, tmp_path / "m.gguf")
    fields = gguf.GGUFReader(result.path).fields
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is True
    text = MULTILINGUAL + "<|im_start|><|im_end|></s>"
    ours, back = llama_cpp_tokens(result.path, text)
    assert ours == hf_token_ids(model, text)
    assert back == " " + text  # the prefix space comes back, as with SentencePiece's pieces
