"""``LlamaForCausalLM`` and ``MistralForCausalLM`` → GGUF architecture ``llama``.

Transforms llama.cpp expects on top of :class:`DecoderArchitecture`:
- q/k projections (weights and biases) permuted from HF's rotate-half layout back to the
  interleaved-pairs layout of the original Llama checkpoints, which llama.cpp's llama RoPE assumes:
  per head, rows ``[0..d/2) ++ [d/2..d)`` become ``(0, d/2), (1, d/2+1), ...``.
- RoPE scaling ``llama3`` becomes a ``rope_freqs.weight`` tensor of per-dimension divisors, which
  llama.cpp applies to the frequencies (``linear`` and ``yarn`` are keys, handled by the base).
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam, moves_values_only
from ggufpack.convert.architectures.decoder import (
    DecoderArchitecture,
    llama3_rope_factors,
    permute_rotary,
    rope_parameters,
    warn_ignored_sliding_window,
)
from ggufpack.convert.checkpoint import Checkpoint


class Llama(DecoderArchitecture):
    """The Llama family (also Mistral, which differs only by sliding window, ignored by llama.cpp)."""

    gguf_arch = gguf.MODEL_ARCH.LLAMA
    rope_types = ("default", "linear", "yarn", "llama3")

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        warn_ignored_sliding_window(ckpt.config, "llama", warnings)

    @moves_values_only
    def transform(self, hf_name: str, data: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
        n_head = hparam(cfg, "num_attention_heads")
        if ".q_proj." in hf_name:
            return permute_rotary(data, n_head)
        if ".k_proj." in hf_name:
            return permute_rotary(data, hparam(cfg, "num_key_value_heads", default=n_head))
        return data

    def extra_tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        rope = rope_parameters(ckpt.config)
        if (rope.get("rope_type") or "") != "llama3":
            return []
        factors = llama3_rope_factors(rope, self.head_dim(ckpt.config))
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        return [PlannedTensor(name, factors.shape, lambda: factors, "F32")]
