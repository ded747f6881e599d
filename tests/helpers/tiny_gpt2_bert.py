"""Tiny GPT-2 and BERT checkpoints for converter tests, made with transformers and a fixed seed.

GPT-2: a ``GPT2LMHeadModel`` with a byte-level BPE tokenizer split the way GPT-2's is
(``ByteLevel`` with its built-in regex). BERT: a ``BertModel`` (or ``BertForMaskedLM``) laid out as
sentence-transformers ships embedding models: ``config.json``, ``model.safetensors``, a WordPiece
``tokenizer.json``, ``modules.json`` and ``1_Pooling/config.json``. Both tokenizers come from the
multilingual text of ``examples/make_tiny_model.py``.

Also here: the pooled embedding sentence-transformers would compute (:func:`hf_pooled_embedding`),
with transformers and numpy, since that package is not installed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.tinymodels import _maker

GPT2_SPECIAL = "<|endoftext|>"
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

GPT2_CONFIG: dict[str, Any] = {
    "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256,
    # Larger than the usual 0.02 so that logits spread out and argmax comparisons are meaningful.
    "initializer_range": 0.25,
}
BERT_CONFIG: dict[str, Any] = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "max_position_embeddings": 128, "type_vocab_size": 2, "initializer_range": 0.25,
}


def _training_text() -> list[str]:
    return [_maker().TRAINING_TEXT] * 4


def _save_config_without_version(outdir: Path) -> None:
    path = outdir / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("transformers_version", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def make_tiny_gpt2(outdir: Path, *, seed: int = 0, vocab_size: int = 512, config: Mapping[str, Any] | None = None,
                   gelu_free: bool = False) -> Path:
    """A tiny ``GPT2LMHeadModel`` (tied head, GPT-2's byte-level BPE) in ``outdir``.

    ``gelu_free`` zeroes the MLPs' ``c_fc`` weights and biases: every GELU input is then exactly 0, and
    so is its output on both sides, which takes llama.cpp's float16 GELU table out of the comparison
    while every other tensor (``c_proj`` biases included) still shapes the logits.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=[GPT2_SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=GPT2_SPECIAL, eos_token=GPT2_SPECIAL, unk_token=GPT2_SPECIAL,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(outdir)
    special = tok.token_to_id(GPT2_SPECIAL)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), bos_token_id=special, eos_token_id=special,
                     **{**GPT2_CONFIG, **(config or {})})
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    if gelu_free:
        with torch.no_grad():
            for block in model.transformer.h:
                block.mlp.c_fc.weight.zero_()
                block.mlp.c_fc.bias.zero_()
    model.save_pretrained(outdir, safe_serialization=True)
    _save_config_without_version(outdir)
    return outdir


def wordpiece_tokenizer(lowercase: bool = True, vocab_size: int = 1000) -> Any:
    """A BERT ``tokenizers.Tokenizer`` (BertNormalizer, BertPreTokenizer, WordPiece, [CLS] $A [SEP]).

    The vocabulary is written here rather than trained: the ``tokenizers`` WordPiece trainer breaks
    ties in hash-map order, so its vocabulary changes from run to run. This one is the special tokens,
    every character of the (normalized) training text as a word start and as a ``##`` continuation,
    then word-initial prefixes and ``##`` suffixes of its words, most frequent first, ties by text.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    split = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for w, _ in split.pre_tokenize_str(normalizer.normalize_str("\n".join(_training_text()))))
    chars = sorted({c for w in words for c in w})
    pieces: Counter[str] = Counter()
    for word, n in words.items():
        for i in range(2, len(word) + 1):
            pieces[word[:i]] += n
            if i < len(word):
                pieces["##" + word[-i:]] += n
    tokens = [*BERT_SPECIAL, *chars, *(f"##{c}" for c in chars)]
    tokens += sorted(pieces, key=lambda t: (-pieces[t], t))[: vocab_size - len(tokens)]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.add_special_tokens(BERT_SPECIAL)
    tok.normalizer = normalizer
    tok.pre_tokenizer = split
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


def make_tiny_bert(outdir: Path, *, seed: int = 0, pooling: str | None = "mean", lowercase: bool = True,
                   architecture: str = "BertModel", config: Mapping[str, Any] | None = None) -> Path:
    """A tiny BERT embedding model in ``outdir``, as sentence-transformers ships one.

    ``pooling`` is ``mean`` or ``cls`` (written to ``1_Pooling/config.json``), or None for a plain
    transformers checkpoint without sentence-transformers files.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel, PreTrainedTokenizerFast

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tok = wordpiece_tokenizer(lowercase=lowercase)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", do_lower_case=lowercase, clean_up_tokenization_spaces=True,
    ).save_pretrained(outdir)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), pad_token_id=tok.token_to_id("[PAD]"),
                     **{**BERT_CONFIG, **(config or {})})
    cfg.architectures = [architecture]
    torch.manual_seed(seed)
    model_class = {"BertModel": BertModel, "BertForMaskedLM": BertForMaskedLM}[architecture]
    model_class(cfg).eval().save_pretrained(outdir, safe_serialization=True)
    _save_config_without_version(outdir)
    if pooling is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (outdir / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
        (outdir / "1_Pooling").mkdir(exist_ok=True)
        modes = {f"pooling_mode_{m}": m_on for m, m_on in (
            ("cls_token", pooling == "cls"), ("mean_tokens", pooling == "mean"), ("max_tokens", False),
            ("mean_sqrt_len_tokens", False),
        )}
        (outdir / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": cfg.hidden_size, **modes}, indent=2), encoding="utf-8",
        )
        (outdir / "2_Normalize").mkdir(exist_ok=True)
    return outdir


# --- references --------------------------------------------------------------------------------


def hf_pooled_embedding(model_dir: Path, ids: list[int], pooling: str) -> np.ndarray:
    """What sentence-transformers computes for one sequence: last hidden states, mean- or CLS-pooled."""
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(model_dir).float().eval()
    with torch.no_grad():
        hidden = model(torch.tensor([ids])).last_hidden_state[0].numpy()
    return hidden.mean(axis=0) if pooling == "mean" else hidden[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))
