#!/usr/bin/env python3
"""Make the quickstart's tiny Llama checkpoint: ``python examples/make_tiny_model.py OUTDIR``.

Everything is made here, offline and deterministically: a byte-level BPE tokenizer trained with
the ``tokenizers`` library on the small multilingual text below (Llama-3 style pre-tokenizer, so
llama.cpp's ``llama-bpe`` pre-tokenizer reproduces it exactly), and a randomly initialised
``LlamaForCausalLM`` from ``transformers`` with a fixed seed, saved as safetensors with its
tokenizer files, a chat template and a model card. The result is a few hundred kilobytes.

The weights are random: the model "speaks" noise. It exists so that conversion, packing and
running can be shown and tested end to end without downloading anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Text the tokenizer is trained on: several scripts, digits, whitespace runs, emoji, code.
TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. It's 2024, and we've got 3 models, 12 layers, 64 heads.
Packing a model into an image: build it once, run it anywhere. Don't re-download what you already have!
Der schnelle braune Fuchs springt über den faulen Hund. Größe, Straße, Äpfel und Öl.
Le renard brun rapide saute par-dessus le chien paresseux. Où est l'hôtel? Ça va très bien, merci.
El rápido zorro marrón salta sobre el perro perezoso. ¿Dónde está la estación? ¡Qué día!
Быстрая коричневая лиса прыгает через ленивую собаку. Привет, как дела? Всё хорошо.
敏捷的棕色狐狸跳过了懒狗。我想在苹果工作，今天天气很好。你好，世界！
素早い茶色の狐がのろまな犬を飛び越える。こんにちは、世界。ありがとうございます。
빠른 갈색 여우가 게으른 개를 뛰어넘습니다. 안녕하세요, 세계.
الثعلب البني السريع يقفز فوق الكلب الكسول. مرحبا بالعالم.
Ο γρήγορος καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο. Γειά σου κόσμε.
कुशल भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। नमस्ते दुनिया।
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2,718 1e-5 0x1F 42nd 7th.
Emoji: 🚀 🦙🦙 ✅ 😀 😶‍🌫️ 👍🏽 🇩🇪 ❤️ — and symbols: © ® ™ € £ ¥ § ¶ … «» “quotes”.
def main(argv: list[str]) -> int:
    for i in range(10):
        print(f"{i:>4}  {i * i}")
    return 0
    \t tabs\tand    spaces   and
newlines


end.
"""

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"

# Llama 3's pre-tokenizer split (what llama.cpp calls ``llama-bpe``).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

MODEL_CARD = """\
---
license: mit
language:
- en
- de
- fr
- ru
- zh
- ja
tags:
- llama
- tiny
- random-weights
- ggufpack-example
pipeline_tag: text-generation
---

# tiny-llama

A tiny, randomly initialised Llama model (hidden size {hidden}, {layers} layers, {heads} attention heads,
{kv_heads} key/value heads, vocabulary {vocab}) with a byte-level BPE tokenizer trained on a few lines of
multilingual text. Made by `examples/make_tiny_model.py` in the ggufpack repository, with a fixed seed.

Its output is noise: it exists to show and test conversion to GGUF, packing and running, offline.
"""

DEFAULT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    # Larger than the usual 0.02 so that logits spread out and argmax comparisons are meaningful.
    "initializer_range": 0.25,
    "tie_word_embeddings": False,
}


def train_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on :data:`TRAINING_TEXT`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    # Special tokens come after the learned vocabulary, as in Llama 3.
    tok.add_special_tokens(SPECIAL_TOKENS)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)],
    )
    return tok


def make_tiny_llama(
    outdir: Path, *, seed: int = 0, vocab_size: int = 512, config: Mapping[str, Any] | None = None,
    architecture: str = "LlamaForCausalLM", dtype: str = "float32",
) -> Path:
    """Write a tiny Llama-family checkpoint (weights, config, tokenizer, card) into ``outdir``.

    ``config`` overrides :data:`DEFAULT_CONFIG` keys (``rope_parameters``, ``tie_word_embeddings``...);
    ``architecture`` may be ``MistralForCausalLM``, which shares Llama's layout.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=EOS, clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(outdir)

    model_type = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}[architecture]
    settings = {**DEFAULT_CONFIG, **(config or {})}
    cfg = AutoConfig.for_model(
        model_type, vocab_size=tok.get_vocab_size(), bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOT), pad_token_id=tok.token_to_id(EOS), **settings,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(getattr(torch, dtype)).eval()
    model.save_pretrained(outdir, safe_serialization=True)
    (outdir / "README.md").write_text(MODEL_CARD.format(
        hidden=cfg.hidden_size, layers=cfg.num_hidden_layers, heads=cfg.num_attention_heads,
        kv_heads=cfg.num_key_value_heads, vocab=cfg.vocab_size,
    ), encoding="utf-8")
    for name in ("config.json", "generation_config.json"):
        _normalise_json(outdir / name)
    return outdir


def _normalise_json(path: Path) -> None:
    """Drop the transformers version stamp so that regenerating gives the same bytes."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("transformers_version", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_tiny_llama(args.outdir, seed=args.seed)
    print(f"wrote {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
