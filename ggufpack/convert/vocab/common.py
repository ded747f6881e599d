"""What every tokenizer kind produces: a :class:`Vocab` ready to write, and the special tokens.

Special tokens, merges, ``add_bos``/``add_eos`` and the chat template are read by gguf-py's
:class:`gguf.SpecialVocab` from ``tokenizer_config.json``, ``tokenizer.json``,
``special_tokens_map.json``, ``generation_config.json`` and ``chat_template.jinja``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from ggufpack.errors import GGUFPackError, shown

MAX_VOCAB = 1 << 22
"""Most token ids a vocabulary may span (4 M; the largest real ones hold about 260 K): every list a
vocabulary writes is this long at most, whatever ids or ``vocab_size`` a hostile file claims."""


@dataclass(frozen=True)
class Vocab:
    """A tokenizer ready to write: tokens, their types, the pre-tokenizer name, plus special tokens."""

    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    token_types: list[int]
    special: gguf.SpecialVocab
    scores: list[float] | None = None  # SentencePiece piece scores

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.scores is not None:
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.token_types)
        self.special.add_to_gguf(writer, quiet=True)


def special_vocab(model_dir: Path, n_vocab: int) -> gguf.SpecialVocab:
    """gguf-py's reader of special tokens, merges, add_bos/add_eos and the chat template.

    Its log chatter about template shapes it does not recognise (Llama 3's pair template, say) is
    silenced: it is about sentence pairs, which llama.cpp never builds.
    """
    chatter = logging.getLogger("gguf.vocab")
    level = chatter.level
    chatter.setLevel(logging.ERROR)
    try:
        return gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    except (ValueError, OSError) as e:
        raise GGUFPackError(f"{model_dir}: cannot read the special tokens or merges: {e}") from e
    finally:
        chatter.setLevel(level)


def checked_vocab_size(vocab_size: object) -> int | None:
    """config.json's ``vocab_size``: None, or a whole number from 1 to :data:`MAX_VOCAB`."""
    if vocab_size is None:
        return None
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 0 < vocab_size <= MAX_VOCAB:
        raise GGUFPackError(f"config.json: vocab_size must be a whole number from 1 to {MAX_VOCAB}, "
                            f"not {shown(vocab_size)}")
    return vocab_size


def check_token_id(idx: int, bound: int, where: Path, what: str = "token") -> int:
    """``idx`` if it is a token id below ``bound`` (the vocab_size, or what the tokenizer holds), else our error.

    Checked before anything is allocated by id: a token id of 3×10⁸ must not pad a list to that length.
    """
    if not 0 <= idx < bound:
        raise GGUFPackError(f"{where}: {what} id {shown(idx)} is outside the model's vocabulary of {bound} ids")
    return idx


def tokens_by_id(by_id: dict[int, tuple[str, int]], vocab_size: int | None, where: Path) -> tuple[list[str], list[int]]:
    """Token texts and types indexed by id, with unused ``[PADn]`` entries up to ``vocab_size`` (config.json)."""
    if not by_id:
        raise GGUFPackError(f"{where}: empty vocabulary")
    size = vocab_size if vocab_size is not None else min(max(by_id) + 1, MAX_VOCAB)
    for idx in (min(by_id), max(by_id)):
        check_token_id(idx, size, where)
    for idx, (text, _) in by_id.items():
        if not isinstance(text, str):
            raise GGUFPackError(f"{where}: token {idx} is {shown(text)}, not a string")
    pairs = [by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED)) for i in range(size)]
    return [text for text, _ in pairs], [int(kind) for _, kind in pairs]
