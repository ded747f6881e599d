"""SentencePiece (``tokenizer.model``) → ``llama`` vocab. Not implemented yet (issue #4)."""

from __future__ import annotations

from pathlib import Path

from ggufpack.convert.vocab.common import Vocab
from ggufpack.errors import GGUFPackError


def load_sentencepiece_vocab(model_dir: Path, vocab_size: int | None, warnings: list[str]) -> Vocab:
    raise GGUFPackError(f"{model_dir}: SentencePiece tokenizers (tokenizer.model) are not supported yet")
