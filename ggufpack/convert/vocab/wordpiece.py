"""WordPiece (BERT's ``tokenizer.json``) → ``bert`` vocab, for llama.cpp's WPM tokenizer.

**Token spelling.** Hugging Face's WordPiece marks word *continuations*: ``play ##ing``. llama.cpp's
WPM tokenizer marks word *starts* instead: it prefixes every word with ``▁`` (U+2581) and matches
the longest vocabulary entries greedily, so ``▁play ing``. The same vocabulary in that spelling:
a continuation loses its prefix (``##ing`` → ``ing``), any other normal token gains ``▁``
(``play`` → ``▁play``); special and added tokens stay as written, since llama.cpp matches them in
the raw text as Hugging Face does.

**Normalization.** llama.cpp applies BertNormalizer's steps itself (drop control characters, split
on whitespace, punctuation and CJK ideographs) and reads two switches,
``tokenizer.ggml.normalizer.lowercase`` and ``.strip_accents``, both on when absent, which is wrong
for cased models; they are written here from the ``normalizer`` of ``tokenizer.json``. Known
residual differences of llama.cpp's WPM with strip_accents on: its NFD maps each code point to a
single one (Hangul syllables stay whole where Hugging Face decomposes them into jamo) and it strips
all combining marks (``\\p{M}``), where Hugging Face strips only nonspacing ones (``Mn``): e.g. the
spacing vowel signs of Devanagari. Words over ``max_input_chars_per_word`` (100) characters are
``[UNK]`` for Hugging Face but split into pieces by llama.cpp.

**Special tokens.** [CLS] is the BOS token and [SEP] the EOS/separator; llama.cpp's ``bert`` vocab
defaults to the ids of the original BERT vocabulary (101, 102, 100, 0, 103) for any id not written,
so every one found is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from ggufpack.convert.checkpoint import read_json
from ggufpack.convert.vocab.common import Vocab, special_vocab, tokens_by_id
from ggufpack.errors import GGUFPackError, shown

WORD_START = "\u2581"
LOWERCASE_KEY = "tokenizer.ggml.normalizer.lowercase"
STRIP_ACCENTS_KEY = "tokenizer.ggml.normalizer.strip_accents"
#: GGUF special-token kinds → the names BERT vocabularies use, when tokenizer_config.json does not say
_DEFAULT_SPECIALS = {"bos": "[CLS]", "eos": "[SEP]", "sep": "[SEP]", "unk": "[UNK]", "pad": "[PAD]", "mask": "[MASK]"}


@dataclass(frozen=True)
class WordPieceVocab(Vocab):
    """A ``bert`` vocab plus the normalizer switches llama.cpp's WPM tokenizer reads."""

    lowercase: bool = True
    strip_accents: bool = True

    def write(self, writer: gguf.GGUFWriter) -> None:
        super().write(writer)
        writer.add_bool(LOWERCASE_KEY, self.lowercase)
        writer.add_bool(STRIP_ACCENTS_KEY, self.strip_accents)


def load_wordpiece_vocab(model_dir: Path, vocab_size: int | None, warnings: list[str]) -> Vocab:
    """Read the WordPiece ``tokenizer.json`` in ``model_dir``; ``vocab_size`` (config.json) pads the list."""
    tokenizer_json = model_dir / "tokenizer.json"
    data = read_json(tokenizer_json)
    model = data.get("model") or {}
    if model.get("type") != "WordPiece":
        raise GGUFPackError(f"{tokenizer_json}: expected a WordPiece model, found {shown(model.get('type'))}")
    tokens, types = _wpm_tokens(data, vocab_size, tokenizer_json)
    lowercase, strip_accents = normalizer_options(data.get("normalizer"), warnings)
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "BertPreTokenizer":
        warnings.append(f"pre-tokenizer {shown(pre.get('type'))} is not BertPreTokenizer; llama.cpp's WPM tokenizer "
                        "splits on whitespace and punctuation regardless: tokenization may differ")
    special = special_vocab(model_dir, len(tokens))
    special.load_merges = False  # WordPiece has none; gguf-py would warn about their absence
    _complete_specials(special, tokens, data)
    return WordPieceVocab(model="bert", pre="default", tokens=tokens, token_types=types, special=special,
                          lowercase=lowercase, strip_accents=strip_accents)


def normalizer_options(normalizer: Any, warnings: list[str]) -> tuple[bool, bool]:
    """(lowercase, strip_accents) of a ``tokenizer.json`` normalizer, warning about steps llama.cpp lacks."""
    if not normalizer:
        return False, False
    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    lowercase = strip_accents = decomposed = False
    for step in steps:
        kind = step.get("type")
        if kind == "BertNormalizer":
            lowercase = bool(step.get("lowercase", True))
            strip = step.get("strip_accents")
            strip_accents = lowercase if strip is None else bool(strip)
            if step.get("clean_text") is False or step.get("handle_chinese_chars") is False:
                warnings.append("BertNormalizer with clean_text or handle_chinese_chars off: llama.cpp always "
                                "does both, so tokenization may differ")
        elif kind == "Lowercase":
            lowercase = True
        elif kind == "NFD":
            decomposed = True
        elif kind == "StripAccents" and decomposed:
            strip_accents = True
        else:
            warnings.append(f"normalizer step {shown(kind)} has no llama.cpp WPM equivalent: tokenization may differ")
    return lowercase, strip_accents


def _wpm_tokens(data: dict[str, Any], vocab_size: int | None, where: Path) -> tuple[list[str], list[int]]:
    """Token texts in llama.cpp's word-start spelling, and their types, indexed by id."""
    model = data["model"]
    prefix = model.get("continuing_subword_prefix") or "##"
    by_id: dict[int, tuple[str, int]] = {}
    for text, idx in (model.get("vocab") or {}).items():
        word = text[len(prefix):] if text.startswith(prefix) and len(text) > len(prefix) else WORD_START + text
        by_id[int(idx)] = (word, gguf.TokenType.NORMAL)
    unk = model.get("unk_token")
    for added in data.get("added_tokens", []):
        text, idx = added["content"], int(added["id"])
        kind = gguf.TokenType.USER_DEFINED
        if text == unk:
            kind = gguf.TokenType.UNKNOWN
        elif added.get("special", False):
            kind = gguf.TokenType.CONTROL
        by_id[idx] = (text, kind)
    return tokens_by_id(by_id, vocab_size, where)


def _complete_specials(special: gguf.SpecialVocab, tokens: list[str], data: dict[str, Any]) -> None:
    """Fill the special ids tokenizer_config.json left out from BERT's usual names.

    Without them llama.cpp would fall back to the ids of Google's original vocabulary. ``cls`` has no
    GGUF key of its own (it is the BOS token), so it is dropped rather than warned about on writing.
    """
    ids = {text: i for i, text in enumerate(tokens)}
    cls = special.special_token_ids.pop("cls", None)
    if cls is not None:
        special.special_token_ids.setdefault("bos", cls)
    for kind, name in _DEFAULT_SPECIALS.items():
        if kind not in special.special_token_ids and name in ids:
            special.special_token_ids[kind] = ids[name]
    if (data.get("post_processor") or {}).get("type") == "BertProcessing":  # [CLS] $A [SEP], which gguf-py skips
        special.add_special_token.setdefault("bos", True)
        special.add_special_token.setdefault("eos", True)
