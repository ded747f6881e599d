"""Tokenizer files → ``tokenizer.ggml.*`` metadata, from the files alone (no transformers).

:func:`load_vocab` picks the reader by what the model directory ships:

- ``tokenizer.json`` with a ``WordPiece`` model (BERT): :mod:`.wordpiece`;
- ``tokenizer.json`` with a byte-level ``BPE`` model (Llama 3, Qwen, GPT-2): :mod:`.bpe`;
- ``tokenizer.model`` (SentencePiece: Llama 2, Mistral v0.1, Gemma, Phi-3), also when a
  ``tokenizer.json`` mirrors it: :mod:`.sentencepiece`.
"""

from __future__ import annotations

from pathlib import Path

from ggufpack.convert.files import malformed, read_json
from ggufpack.convert.vocab.common import Vocab, checked_vocab_size
from ggufpack.errors import GGUFPackError, shown


def load_vocab(model_dir: Path, vocab_size: object, warnings: list[str]) -> Vocab:
    """Read the tokenizer in ``model_dir``; ``vocab_size`` (from config.json) pads the token list."""
    size = checked_vocab_size(vocab_size)
    # the readers index the tokenizer files as their format defines them; a file that is not shaped so ends here
    with malformed(f"{model_dir}: malformed tokenizer files"):
        return _load_vocab(model_dir, size, warnings)


def _load_vocab(model_dir: Path, vocab_size: int | None, warnings: list[str]) -> Vocab:
    tokenizer_json = model_dir / "tokenizer.json"
    kind = None
    if tokenizer_json.is_file():
        model = read_json(tokenizer_json).get("model")
        kind = model.get("type") if isinstance(model, dict) else None
    if kind == "WordPiece":
        from ggufpack.convert.vocab.wordpiece import load_wordpiece_vocab

        return load_wordpiece_vocab(model_dir, vocab_size, warnings)
    if (model_dir / "tokenizer.model").is_file():
        from ggufpack.convert.vocab.sentencepiece import load_sentencepiece_vocab

        return load_sentencepiece_vocab(model_dir, vocab_size, warnings)
    if kind == "BPE":
        from ggufpack.convert.vocab.bpe import load_bpe_vocab

        return load_bpe_vocab(model_dir, vocab_size, warnings)
    if kind is None:
        raise GGUFPackError(f"{model_dir}: no tokenizer.json or tokenizer.model: cannot build the vocabulary")
    raise GGUFPackError(f"{tokenizer_json}: tokenizer model {shown(kind)} is not supported "
                        "(BPE, WordPiece, SentencePiece)")


__all__ = ["Vocab", "load_vocab"]
