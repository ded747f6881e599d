"""The hyperparameters an estimate needs, read from GGUF metadata the way llama.cpp's loader reads them.

Every number is checked: a header that claims 10^12 layers or a 2^40-wide embedding is refused with a
clear error before any arithmetic (the estimate loops over layers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gguf.constants import MODEL_ARCH_NAMES

from ggufpack.errors import GGUFPackError
from ggufpack.gguf_info import ElidedArray, GGUFHeader
from ggufpack.gguf_info.facts import ENCODER_ARCHITECTURES

MAX_LAYERS = 1 << 12
MAX_WIDTH = 1 << 20
MAX_VOCAB = 1 << 24
MAX_CONTEXT = 1 << 30

# Layers using the sliding window when the GGUF has no sliding_window_pattern key: llama.cpp's
# per-architecture default n_pattern (``load_swa_pattern(ml, n)``) and whether the dense layer comes first.
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "exaone4": (4, False), "llama4": (4, False), "gpt-oss": (2, False),
    "olmo2": (4, False), "modern-bert": (3, True), "smallthinker": (4, True), "plamo3": (8, False),
}
_KNOWN_ARCHITECTURES = frozenset(MODEL_ARCH_NAMES.values())
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class Hparams:
    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    head_k: int
    head_v: int
    n_ff: tuple[int, ...]
    n_expert_used: int
    n_ff_exp: int
    n_ff_shexp: int
    gated_ffn: bool
    moe_layers: frozenset[int]
    has_kv_cache: bool
    has_logits: bool
    n_swa: int
    swa_layers: tuple[bool, ...]

    def n_embd_k_gqa(self, il: int) -> int:
        return self.head_k * self.n_head_kv[il]

    def n_embd_v_gqa(self, il: int) -> int:
        return self.head_v * self.n_head_kv[il]


def layer_of(tensor_name: str) -> int | None:
    """The block a tensor belongs to (``blk.12.attn_q.weight`` → 12), or None."""
    m = _BLOCK.match(tensor_name)
    return int(m[1]) if m else None


def _number(header: GGUFHeader, key: str, default: int | None, limit: int) -> int:
    value = header.metadata.get(key, default)
    if value is None:
        raise GGUFPackError(f"the GGUF header has no {key}: not a complete llama.cpp model")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise GGUFPackError(f"the GGUF header says {key} = {value!r:.40}: not a number from 0 to {limit}")
    return value


def _per_layer(header: GGUFHeader, key: str, default: int | None, n_layer: int, limit: int) -> tuple[int, ...]:
    value = header.metadata.get(key)
    if isinstance(value, ElidedArray):
        raise GGUFPackError(f"{key} is a per-layer list the image config does not hold in full; "
                            "estimate the GGUF file itself")
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) < n_layer:
            raise GGUFPackError(f"{key} lists {len(value)} values for {n_layer} layers")
        items = list(value[:n_layer])
        if any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit for v in items):
            raise GGUFPackError(f"{key} holds values that are not numbers from 0 to {limit}")
        return tuple(items)
    return (_number(header, key, default, limit),) * n_layer


def _vocab_size(header: GGUFHeader, arch: str) -> int:
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if tokens is not None and not isinstance(tokens, (str, int, float)):
        n = len(tokens)
    else:
        embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
        n = _number(header, f"{arch}.vocab_size", embd.shape[1] if embd and len(embd.shape) > 1 else None, MAX_VOCAB)
    if not 0 < n <= MAX_VOCAB:
        raise GGUFPackError(f"vocabulary of {n} tokens: not a size llama.cpp loads")
    return n


def _swa_layers(header: GGUFHeader, arch: str, n_layer: int, n_swa: int) -> tuple[bool, ...]:
    if n_swa == 0:
        return (False,) * n_layer
    key = f"{arch}.attention.sliding_window_pattern"
    value = header.metadata.get(key)
    if isinstance(value, Sequence) and not isinstance(value, str) and not isinstance(value, ElidedArray):
        if len(value) < n_layer:
            raise GGUFPackError(f"{key} lists {len(value)} values for {n_layer} layers")
        return tuple(bool(v) for v in value[:n_layer])
    n_pattern, dense_first = SWA_PATTERNS.get(arch, (0, False))
    if isinstance(value, int) and not isinstance(value, bool):
        n_pattern = value
    if arch not in SWA_PATTERNS and key not in header.metadata:
        return (False,) * n_layer  # a window key alone does not make llama.cpp use a SWA cache
    if dense_first:
        return tuple(n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer))
    return tuple(n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer))


def read_hparams(header: GGUFHeader) -> Hparams:
    """What the estimate needs from a model header; a clear error for anything llama.cpp could not load."""
    arch = header.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFPackError("the GGUF header has no general.architecture: not a llama.cpp model")
    if arch == "clip":
        raise GGUFPackError("this GGUF is a multimodal projector (clip), not a language model")
    if arch not in _KNOWN_ARCHITECTURES:
        raise GGUFPackError(f"unknown architecture {arch!r:.60}: llama.cpp cannot load it, so there is nothing "
                            "to estimate")
    n_layer = _number(header, f"{arch}.block_count", None, MAX_LAYERS)
    n_embd = _number(header, f"{arch}.embedding_length", None, MAX_WIDTH)
    n_head = _per_layer(header, f"{arch}.attention.head_count", 0, n_layer, MAX_WIDTH)
    n_head_kv = _per_layer(header, f"{arch}.attention.head_count_kv", max(n_head, default=0), n_layer, MAX_WIDTH)
    head_max = max(n_head, default=0)
    head_dim = n_embd // head_max if head_max else 0
    n_expert = _number(header, f"{arch}.expert_count", 0, MAX_WIDTH)
    names = {t.name for t in header.tensors}
    moe_layers = frozenset(il for name in names if "_exps." in name and (il := layer_of(name)) is not None)
    causal = header.metadata.get(f"{arch}.attention.causal", True) is not False
    has_kv = causal and arch not in ENCODER_ARCHITECTURES and any(n_head_kv)
    n_swa = _number(header, f"{arch}.attention.sliding_window", 0, MAX_CONTEXT)
    return Hparams(
        arch=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=_vocab_size(header, arch),
        n_ctx_train=_number(header, f"{arch}.context_length", 4096, MAX_CONTEXT),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_k=_number(header, f"{arch}.attention.key_length", head_dim, MAX_WIDTH),
        head_v=_number(header, f"{arch}.attention.value_length", head_dim, MAX_WIDTH),
        n_ff=_per_layer(header, f"{arch}.feed_forward_length", 0, n_layer, MAX_WIDTH * 64),
        n_expert_used=_number(header, f"{arch}.expert_used_count", min(n_expert, 2), MAX_WIDTH) if n_expert else 0,
        n_ff_exp=_number(header, f"{arch}.expert_feed_forward_length", 0, MAX_WIDTH * 64),
        n_ff_shexp=_number(header, f"{arch}.expert_shared_feed_forward_length", 0, MAX_WIDTH * 64),
        gated_ffn=any(".ffn_gate" in name for name in names),
        moe_layers=moe_layers,
        has_kv_cache=has_kv,
        has_logits="output.weight" in names or (arch not in ENCODER_ARCHITECTURES and causal),
        n_swa=n_swa if has_kv else 0,
        swa_layers=_swa_layers(header, arch, n_layer, n_swa) if has_kv else (False,) * n_layer,
    )
