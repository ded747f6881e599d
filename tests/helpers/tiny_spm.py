"""Tiny SentencePiece tokenizers, trained in the test and wrapped as Hugging Face tokenizers.

Two styles, as real checkpoints ship them:

- ``gemma``: no dummy prefix (the text is taken as is, spaces become ``▁``), ``<pad>``/``<eos>``/
  ``<bos>``/``<unk>`` at ids 0..3, the chat markers ``<start_of_turn>``/``<end_of_turn>`` as
  user-defined symbols, wrapped by transformers' ``GemmaTokenizer``;
- ``llama``: Llama 2 style, a dummy-prefix space, ``<unk>``/``<s>``/``</s>`` at ids 0..2, wrapped by
  ``LlamaTokenizer`` in its legacy mode (a prefix space after special tokens too, which is what
  llama.cpp's SentencePiece tokenizer does).

Both are BPE SentencePiece models with byte fallback and split digits, trained on the quickstart's
multilingual text. transformers builds its tokenizer from ``tokenizer.model`` itself (its own
SentencePiece extractor, which needs ``protobuf``), so the HF side owes nothing to our reader.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.helpers.tinymodels import _maker

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

STYLES: dict[str, dict[str, Any]] = {
    "gemma": {
        "train": {
            "add_dummy_prefix": False, "pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3,
            "bos_piece": "<bos>", "eos_piece": "<eos>",
            "user_defined_symbols": ["<start_of_turn>", "<end_of_turn>"],
            "control_symbols": ["<mask>"],
        },
        "tokenizer_class": "GemmaTokenizer",
        "special": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                    "mask_token": "<mask>"},
    },
    "llama": {
        "train": {"add_dummy_prefix": True, "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1,
                  "user_defined_symbols": ["<|im_start|>", "<|im_end|>"]},
        "tokenizer_class": "LlamaTokenizer",
        "special": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": True},
    },
}

#: text to check tokenizations on: whitespace runs, digits, several scripts, emoji, the style's specials
SPECIALS_TEXT = {
    "gemma": "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n<mask> ok",
    "llama": "<s>[INST] hi [/INST]</s><|im_start|>user\n hi<|im_end|>",
}


def train_spm(outdir: Path, style: str, vocab_size: int = 600) -> Path:
    """Train a BPE SentencePiece model of ``style`` on the quickstart's text; returns ``tokenizer.model``."""
    import sentencepiece as spm

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    corpus = outdir / "corpus.txt"
    corpus.write_text(_maker().TRAINING_TEXT * 3, encoding="utf-8")
    prefix = outdir / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2,
        **STYLES[style]["train"],
    )
    model = outdir / "tokenizer.model"
    shutil.move(prefix.with_suffix(".model"), model)
    for leftover in (corpus, prefix.with_suffix(".vocab")):
        leftover.unlink()
    return model


def save_spm_tokenizer(outdir: Path, style: str, vocab_size: int = 600) -> dict[str, int]:
    """Train a ``style`` SentencePiece model and save it with its HF tokenizer files into ``outdir``.

    Returns the special token ids (``bos``, ``eos``, ``pad``, ``unk``) by name.
    """
    import transformers

    outdir = Path(outdir)
    source = outdir / "spm-source"
    model = train_spm(source, style, vocab_size)
    spec = STYLES[style]
    cls = getattr(transformers, spec["tokenizer_class"])
    tok = cls.from_pretrained(source, vocab_file=str(model), add_bos_token=True, add_eos_token=False,
                              **spec["special"])
    if style == "gemma":
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(outdir)
    shutil.copy(model, outdir / "tokenizer.model")
    shutil.rmtree(source)
    ids = {name: tok.convert_tokens_to_ids(spec["special"][f"{name}_token"])
           for name in ("bos", "eos", "pad", "unk") if f"{name}_token" in spec["special"]}
    return ids
