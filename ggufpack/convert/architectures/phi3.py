"""``Phi3ForCausalLM`` → GGUF architecture ``phi3``.

What llama.cpp's phi3 graph (``src/models/phi3.cpp``) loads and computes, against
:class:`DecoderArchitecture`'s Llama layout:

- fused projections, kept fused: ``self_attn.qkv_proj`` → ``attn_qkv`` (q, k, v rows in that
  order, as llama.cpp splits them) and ``mlp.gate_up_proj`` → ``ffn_up`` of ``2 x intermediate_size``
  rows, gate half first, which llama.cpp's SwiGLU splits exactly as transformers' ``chunk(2)`` does;
  no ``ffn_gate``;
- NeoX RoPE on the first ``partial_rotary_factor x head_dim`` dimensions of each head (no permute);
- ``longrope`` scaling: ``rope_factors_long``/``rope_factors_short`` tensors (per-frequency divisors),
  ``rope.scaling.original_context_length`` and ``rope.scaling.attn_factor`` (transformers' cos/sin
  scale). llama.cpp picks the long factors when the *context size* exceeds the original context,
  transformers when the *sequence* does;
- ``head_dim x num_attention_heads`` must equal ``hidden_size``;
- sliding-window attention is disabled in llama.cpp's phi3 (a warning when the config has one).
"""

from __future__ import annotations

import math
from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.architectures.decoder import (
    DecoderArchitecture,
    check_full_width_heads,
    rope_parameters,
    warn_ignored_sliding_window,
)
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.errors import GGUFPackError

LONGROPE_TYPES = ("longrope", "su")  # "su" is the name of early Phi-3 configs


class Phi3(DecoderArchitecture):
    """Phi-3 / Phi-3.5 / Phi-4-mini text models."""

    gguf_arch = gguf.MODEL_ARCH.PHI3
    rope_types = ("default", "linear", *LONGROPE_TYPES)

    # --- hyperparameters -------------------------------------------------------------------------

    def rope_dim(self, cfg: dict[str, Any]) -> int:
        rope = rope_parameters(cfg)
        fraction = float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)))
        return int(self.head_dim(cfg) * fraction)

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        cfg = ckpt.config
        if cfg.get("sliding_window"):
            writer.add_sliding_window(int(cfg["sliding_window"]))
        warn_ignored_sliding_window(cfg, "phi3", warnings)
        longrope = self.longrope(cfg)
        if longrope is not None:
            writer.add_rope_scaling_orig_ctx_len(longrope["original"])
            writer.add_rope_scaling_attn_factors(longrope["attn_factor"])

    def longrope(self, cfg: dict[str, Any]) -> dict[str, Any] | None:
        """The LongRoPE settings as transformers computes them, or None without longrope scaling."""
        rope = rope_parameters(cfg)
        if rope.get("rope_type") not in LONGROPE_TYPES:
            return None
        n_ctx = int(hparam(cfg, "max_position_embeddings"))
        original = int(rope.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
                       or n_ctx)
        factor = float(rope.get("factor") or n_ctx / original)
        attn_factor = rope.get("attention_factor")
        if attn_factor is None:
            attn_factor = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1.0 else 1.0
        factors = {}
        for kind in ("long", "short"):
            values = rope.get(f"{kind}_factor")
            if values is None or len(values) != self.rope_dim(cfg) // 2:
                raise GGUFPackError(f"config.json: longrope needs {kind}_factor with {self.rope_dim(cfg) // 2} "
                                    f"values (rotary dimensions / 2)")
            factors[kind] = np.asarray(values, dtype=np.float32)
        return {"original": original, "attn_factor": float(attn_factor), **factors}

    # --- tensors ---------------------------------------------------------------------------------

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden, ff = hparam(cfg, "hidden_size"), hparam(cfg, "intermediate_size")
        n_head = hparam(cfg, "num_attention_heads")
        q = n_head * self.head_dim(cfg)
        kv = hparam(cfg, "num_key_value_heads", default=n_head) * self.head_dim(cfg)
        return {
            "input_layernorm.weight": (hidden,), "post_attention_layernorm.weight": (hidden,),
            "self_attn.qkv_proj.weight": (q + 2 * kv, hidden), "self_attn.o_proj.weight": (hidden, q),
            "mlp.gate_up_proj.weight": (2 * ff, hidden), "mlp.down_proj.weight": (hidden, ff),
        }

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return list(self.layer_shapes(cfg))

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        check_full_width_heads(ckpt.config, self.head_dim(ckpt.config), "phi3")
        return super().tensors(ckpt)

    def extra_tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        longrope = self.longrope(ckpt.config)
        if longrope is None:
            return []
        planned = []
        for kind, tensor in (("long", gguf.MODEL_TENSOR.ROPE_FACTORS_LONG),
                             ("short", gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT)):
            data = longrope[kind]
            planned.append(PlannedTensor(gguf.TENSOR_NAMES[tensor] + ".weight", data.shape,
                                         lambda data=data: data, "F32"))
        return planned
