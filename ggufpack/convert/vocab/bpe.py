"""Byte-level BPE (``tokenizer.json`` with a ``BPE`` model and a ``ByteLevel`` step) → ``gpt2`` vocab.

What Llama 3, Mistral Nemo, Qwen and GPT-2 style models ship.

**Pre-tokenizer identification.** llama.cpp does not read the pre-tokenizer from the file: it
reads a name, ``tokenizer.ggml.pre``, and applies the split regexes it hard-codes for that name.
llama.cpp's converter finds the name by tokenizing a fixed check string with the HF tokenizer and
looking the SHA-256 of the resulting ids up in a list of known models. That hash covers the
vocabulary as well as the pre-tokenizer, so it only recognises tokenizers it has seen (any newly
trained tokenizer, like our tiny one, falls through) and it needs transformers. We instead read the
pre-tokenizer definition in ``tokenizer.json`` and match its split regexes and byte-level flags
against the regexes each llama.cpp pre-type applies: same regexes, same pre-tokenization, whatever
the vocabulary. An unknown pre-tokenizer falls back to llama.cpp's ``default`` pre-type, with a
warning in the result, because tokenization may then differ from the HF tokenizer's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from ggufpack.convert.checkpoint import read_json
from ggufpack.convert.vocab.common import Vocab, special_vocab, tokens_by_id
from ggufpack.errors import GGUFPackError, shown

# The GPT-2 split that ByteLevel(use_regex=True) applies.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Split regexes (in order) → the llama.cpp pre-type that applies exactly those.
KNOWN_PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    (_LLAMA3_REGEX,): "llama-bpe",
    (_QWEN2_REGEX,): "qwen2",
    (_GPT2_REGEX,): "gpt-2",
}
DEFAULT_PRE = "default"


def load_bpe_vocab(model_dir: Path, vocab_size: int | None, warnings: list[str]) -> Vocab:
    """Read the tokenizer in ``model_dir``; ``vocab_size`` (from config.json) pads the token list."""
    tokenizer_json = model_dir / "tokenizer.json"
    data = read_json(tokenizer_json)
    kind = (data.get("model") or {}).get("type")
    if kind != "BPE":
        raise GGUFPackError(f"{tokenizer_json}: tokenizer model {shown(kind)} is not supported yet (only BPE)")
    if not _is_byte_level(data):
        raise GGUFPackError(
            f"{tokenizer_json}: a BPE tokenizer without a ByteLevel pre-tokenizer is not supported yet"
        )
    tokens, types = _bpe_tokens(data, vocab_size, tokenizer_json)
    pre = identify_pre_tokenizer(data, warnings)
    special = special_vocab(model_dir, len(tokens))
    if not special.merges:
        raise GGUFPackError(f"{tokenizer_json}: BPE tokenizer without merges")
    return Vocab(model="gpt2", pre=pre, tokens=tokens, token_types=types, special=special)


def identify_pre_tokenizer(tokenizer: dict[str, Any], warnings: list[str]) -> str:
    """The ``tokenizer.ggml.pre`` name whose llama.cpp regexes equal the tokenizer's split rules."""
    regexes = _split_regexes(tokenizer.get("pre_tokenizer"))
    name = KNOWN_PRE_TOKENIZERS.get(tuple(regexes)) if regexes is not None else None
    if name is None:
        warnings.append(
            f"unrecognised BPE pre-tokenizer (split rules {shown(regexes)}); using llama.cpp's {DEFAULT_PRE!r} "
            "pre-tokenizer: tokenization may differ from the Hugging Face tokenizer's"
        )
        return DEFAULT_PRE
    if name == "llama-bpe" and not tokenizer.get("model", {}).get("ignore_merges", False):
        # llama.cpp's llama-bpe takes a whole pre-token from the vocabulary before merging.
        warnings.append("llama-bpe pre-tokenizer but ignore_merges is off: rare words may tokenize differently")
    return name


def _split_regexes(pre: Any) -> list[str] | None:
    """The regexes a ``pre_tokenizer`` splits with, in order, or None if it does anything else."""
    if not isinstance(pre, dict):
        return None
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    regexes: list[str] = []
    for step in steps or []:
        kind = step.get("type")
        if kind == "Split":
            pattern = step.get("pattern", {})
            if "Regex" not in pattern or step.get("behavior") != "Isolated" or step.get("invert"):
                return None
            regexes.append(pattern["Regex"])
        elif kind == "ByteLevel":
            if step.get("add_prefix_space"):
                return None  # llama.cpp's BPE never adds a prefix space
            if step.get("use_regex", True):
                regexes.append(_GPT2_REGEX)
        else:
            return None
    return regexes


def _is_byte_level(tokenizer: dict[str, Any]) -> bool:
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    return any(isinstance(s, dict) and s.get("type") == "ByteLevel" for s in steps or [])


def _looks_special(text: str) -> bool:
    """Added tokens some models forget to flag special, which llama.cpp must treat as control."""
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>")


def _bpe_tokens(data: dict[str, Any], vocab_size: int | None, where: Path) -> tuple[list[str], list[int]]:
    by_id: dict[int, tuple[str, int]] = {}
    for text, idx in data["model"].get("vocab", {}).items():
        by_id[int(idx)] = (text, gguf.TokenType.NORMAL)
    for added in data.get("added_tokens", []):
        text, idx = added["content"], int(added["id"])
        special = added.get("special", False) or _looks_special(text)
        by_id[idx] = (text, gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    return tokens_by_id(by_id, vocab_size, where)
