"""``LlamaForCausalLM`` and ``MistralForCausalLM`` → GGUF architecture ``llama``.

Transforms llama.cpp expects:
- q/k projections (weights and biases) permuted from HF's rotate-half layout back to the
  interleaved-pairs layout of the original Llama checkpoints, which llama.cpp's RoPE assumes:
  per head, rows ``[0..d/2) ++ [d/2..d)`` become ``(0, d/2), (1, d/2+1), ...``.
- tied embeddings: no ``output.weight``; llama.cpp then reuses ``token_embd.weight``.
- RoPE scaling: ``linear`` and ``yarn`` become ``rope.scaling.*`` keys; ``llama3`` becomes a
  ``rope_freqs.weight`` tensor of per-dimension divisors, which llama.cpp applies to the frequencies.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.convert.safetensors import TensorRef
from ggufpack.errors import GGUFPackError

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from transformers 5 ``rope_parameters`` or 4.x ``rope_theta`` + ``rope_scaling``."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "full_attention" in params:  # per-layer-type form; llama has one type
        params = dict(params["full_attention"])
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params["type"]
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    return params


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Rotate-half (HF) → interleaved pairs (llama.cpp), head by head, along the first axis."""
    rows = weights.shape[0]
    if rows % (2 * n_head):
        raise GGUFPackError(f"cannot permute {weights.shape} over {n_head} heads")
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def llama3_rope_factors(params: dict[str, Any], head_dim: int) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1's RoPE scaling (what ``rope_freqs.weight`` holds)."""
    base = float(params.get("rope_theta", 10000.0))
    factor = float(params.get("factor", 8.0))
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    old_ctx = float(params.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    middle = 1.0 / ((1 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, middle))
    return out.astype(np.float32)


class Llama:
    """The Llama family (also Mistral, which differs only by sliding window, ignored by llama.cpp)."""

    gguf_arch = gguf.MODEL_ARCH.LLAMA

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        cfg = ckpt.config
        n_head = hparam(cfg, "num_attention_heads")
        hidden = hparam(cfg, "hidden_size")
        head_dim = hparam(cfg, "head_dim", default=hidden // n_head)
        n_ctx = hparam(cfg, "max_position_embeddings", default=None)
        writer.add_block_count(hparam(cfg, "num_hidden_layers"))
        if n_ctx is not None:
            writer.add_context_length(n_ctx)
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(hparam(cfg, "intermediate_size"))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(hparam(cfg, "num_key_value_heads", default=n_head))
        writer.add_layer_norm_rms_eps(float(hparam(cfg, "rms_norm_eps", default=1e-5)))
        writer.add_vocab_size(hparam(cfg, "vocab_size"))
        writer.add_rope_dimension_count(head_dim)
        if cfg.get("head_dim") is not None:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)

        rope = rope_parameters(cfg)
        writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
        kind = rope.get("rope_type") or "default"
        factor = rope.get("factor")
        if kind == "linear" and factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(factor))
        elif kind == "yarn" and factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            writer.add_rope_scaling_factor(float(factor))
            orig = rope.get("original_max_position_embeddings")
            if orig is None:
                raise GGUFPackError("config.json: yarn rope scaling without original_max_position_embeddings")
            writer.add_rope_scaling_orig_ctx_len(int(orig))
            for key, add in (("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
                             ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                             ("beta_slow", writer.add_rope_scaling_yarn_beta_slow)):
                if rope.get(key) is not None:
                    add(float(rope[key]))
        elif kind not in ("default", "llama3"):
            raise GGUFPackError(f"config.json: rope scaling type {kind!r} is not supported for llama models")

        window = cfg.get("sliding_window")
        if window and n_ctx and window < n_ctx:
            warnings.append(f"sliding_window={window} is ignored by llama.cpp's llama architecture; "
                            f"outputs differ from transformers beyond {window} tokens")

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        cfg = ckpt.config
        n_layer = hparam(cfg, "num_hidden_layers")
        n_head = hparam(cfg, "num_attention_heads")
        n_kv = hparam(cfg, "num_key_value_heads", default=n_head)
        tied = bool(cfg.get("tie_word_embeddings", False))
        expected = _expected_shapes(cfg)
        name_map = gguf.get_tensor_name_map(self.gguf_arch, n_layer)

        planned: list[tuple[tuple[int, int], PlannedTensor]] = []
        seen: set[str] = set()
        for hf_name, ref in ckpt.tensors.items():
            if hf_name.endswith(_IGNORED_SUFFIXES) or (tied and hf_name == "lm_head.weight"):
                continue
            want = expected.get(hf_name)
            if want is None:
                raise GGUFPackError(f"unexpected tensor {hf_name!r} for a {n_layer}-layer llama model")
            if ref.shape != want:
                raise GGUFPackError(f"tensor {hf_name!r} has shape {list(ref.shape)}, config.json implies {list(want)}")
            gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise GGUFPackError(f"no GGUF name for tensor {hf_name!r}")
            heads = n_head if ".q_proj." in hf_name else n_kv if ".k_proj." in hf_name else None
            load = partial(_load, ref, heads)
            planned.append((_order(hf_name), PlannedTensor(gguf_name, ref.shape, load, ref.dtype)))
            seen.add(hf_name)

        missing = [n for n in _required(cfg) if n not in seen]
        if missing:
            raise GGUFPackError(f"checkpoint lacks {len(missing)} tensor(s), first {missing[0]!r}")

        rope = rope_parameters(cfg)
        if (rope.get("rope_type") or "") == "llama3":
            head_dim = hparam(cfg, "head_dim", default=hparam(cfg, "hidden_size") // n_head)
            factors = llama3_rope_factors(rope, head_dim)
            name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
            planned.append(((-1, 0), PlannedTensor(name, factors.shape, lambda: factors, "F32")))
        planned.sort(key=lambda item: item[0])
        return [p for _, p in planned]


def _load(ref: TensorRef, heads: int | None) -> np.ndarray:
    data = ref.load_f32()
    return permute_rotary(data, heads) if heads is not None else data


def _order(hf_name: str) -> tuple[int, int]:
    """Embeddings first, then blocks in order, then the output norm and head."""
    if "embed_tokens" in hf_name:
        return (0, 0)
    parts = hf_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdecimal():
            return (1, int(parts[i + 1]))
    return (2, 0)


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    hidden = hparam(cfg, "hidden_size")
    n_head = hparam(cfg, "num_attention_heads")
    n_kv = hparam(cfg, "num_key_value_heads", default=n_head)
    head_dim = hparam(cfg, "head_dim", default=hidden // n_head)
    ff = hparam(cfg, "intermediate_size")
    vocab = hparam(cfg, "vocab_size")
    q, kv = n_head * head_dim, n_kv * head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for i in range(hparam(cfg, "num_hidden_layers")):
        p = f"model.layers.{i}."
        layer = {
            "input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,),
            "self_attn.q_proj.weight": (q, hidden), "self_attn.k_proj.weight": (kv, hidden),
            "self_attn.v_proj.weight": (kv, hidden), "self_attn.o_proj.weight": (hidden, q),
            "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
            "self_attn.v_proj.bias": (kv,), "self_attn.o_proj.bias": (hidden,),
            "mlp.gate_proj.weight": (ff, hidden), "mlp.up_proj.weight": (ff, hidden),
            "mlp.down_proj.weight": (hidden, ff),
            "mlp.gate_proj.bias": (ff,), "mlp.up_proj.bias": (ff,), "mlp.down_proj.bias": (hidden,),
        }
        shapes.update({p + k: v for k, v in layer.items()})
    return shapes


def _required(cfg: dict[str, Any]) -> list[str]:
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(hparam(cfg, "num_hidden_layers")):
        p = f"model.layers.{i}."
        names += [p + k for k in (
            "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
            "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
        )]
    return names
