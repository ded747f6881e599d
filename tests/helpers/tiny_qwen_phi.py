"""Tiny random Qwen2, Qwen3 and Phi-3 checkpoints, made with transformers and a fixed seed.

The tokenizer is the quickstart's byte-level BPE (``examples/make_tiny_model.py``), with what each
family's real tokenizers have and transformers or llama.cpp rely on: Qwen2's digit-by-digit split,
Phi-3's special tokens. The model's ``vocab_size`` is rounded up to a multiple of 32 as real Qwen
checkpoints do (151936 rows for ~151650 tokens): the converter must pad the token list. Every 1-D
parameter (norm weights, biases) is randomised, since transformers initialises them to 1 and 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.tinymodels import _maker

#: the quickstart Llama's sizes (hidden 64, 2 layers, 4 heads, 2 KV heads, wide init), Qwen's epsilon
BASE_CONFIG: dict[str, Any] = {**_maker().DEFAULT_CONFIG, "rms_norm_eps": 1e-6}

#: Qwen2's pre-tokenizer split (single digits), which transformers' Qwen2Tokenizer imposes whatever
#: ``tokenizer.json`` says: the tiny Qwen tokenizers use it too, so that file and transformers agree
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

#: special tokens real checkpoints of a type have and llama.cpp relies on: its vocabulary loader looks
#: up Phi-3's by name (and fails without them) for any model whose ``general.name`` contains "phi3"
EXTRA_SPECIAL_TOKENS: dict[str, list[str]] = {"phi3": ["<s>", "</s>", "<unk>", "<|endoftext|>"]}


def make_tiny_model(outdir: Path, model_type: str, *, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    """Write a tiny ``model_type`` (``qwen2``, ``qwen3``, ``phi3``) checkpoint with its tokenizer into ``outdir``.

    ``config`` overrides :data:`BASE_CONFIG` keys and adds model-specific ones (``head_dim``,
    ``rope_parameters``...).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    maker = _maker()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tok = maker.train_tokenizer()
    tok.add_special_tokens(EXTRA_SPECIAL_TOKENS.get(model_type, []))
    if model_type.startswith("qwen"):
        from tokenizers import Regex, pre_tokenizers

        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=maker.BOS, eos_token=maker.EOT, pad_token=maker.EOS,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(outdir)
    padded_vocab = -(-tok.get_vocab_size() // 32) * 32
    cfg = AutoConfig.for_model(
        model_type, vocab_size=padded_vocab, bos_token_id=tok.token_to_id(maker.BOS),
        eos_token_id=tok.token_to_id(maker.EOT), pad_token_id=tok.token_to_id(maker.EOS),
        **{**BASE_CONFIG, **(config or {})},
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.copy_(torch.randn_like(param) * 0.2 + (1.0 if "norm" in name else 0.0))
    model.save_pretrained(outdir, safe_serialization=True)
    return outdir
