"""``Qwen2ForCausalLM`` → GGUF ``qwen2`` and ``Qwen3ForCausalLM`` → GGUF ``qwen3``.

Both are Llama-shaped, with these differences from :class:`~.llama.Llama` (checked against
llama.cpp's ``src/models/qwen2.cpp``/``qwen3.cpp`` and ``llama_model_rope_type``):

- RoPE is the NeoX (rotate-half) kind in llama.cpp too, so q/k are written as Hugging Face stores
  them: no permute.
- Qwen2 has q/k/v biases (always, in transformers); Qwen3 has them only with ``attention_bias``.
  llama.cpp loads no output-projection or MLP bias for either, so such tensors are refused.
- Qwen3 RMS-normalises each head of q and k before RoPE (``q_norm``/``k_norm``, ``head_dim`` wide),
  and its ``head_dim`` is free (often not ``hidden_size / num_attention_heads``).
- Sliding-window attention (``use_sliding_window``) does not exist in llama.cpp's graphs: a warning.
"""

from __future__ import annotations

from typing import Any

import gguf

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.architectures.decoder import DecoderArchitecture, check_full_width_heads
from ggufpack.convert.checkpoint import Checkpoint

QKV_BIASES = ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias")
#: biases DecoderArchitecture accepts but llama.cpp's qwen graphs never load
UNLOADED_BIASES = ("self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias")


def sliding_layers(cfg: dict[str, Any]) -> int:
    """How many layers transformers runs with sliding-window attention."""
    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        return sum(kind == "sliding_attention" for kind in layer_types)
    if not cfg.get("use_sliding_window") or not cfg.get("sliding_window"):
        return 0
    n_layer = int(hparam(cfg, "num_hidden_layers"))
    return max(0, n_layer - int(cfg.get("max_window_layers", n_layer)))


class Qwen2(DecoderArchitecture):
    """Qwen2 / Qwen2.5: Llama plus q/k/v biases, NeoX RoPE."""

    gguf_arch = gguf.MODEL_ARCH.QWEN2
    #: whether the q/k/v biases exist when ``config.json`` has no ``attention_bias`` key
    attention_bias_default = True
    #: whether llama.cpp's graph allows ``head_dim * num_attention_heads != hidden_size``
    free_head_dim = False

    def has_qkv_bias(self, cfg: dict[str, Any]) -> bool:
        return bool(cfg.get("attention_bias", self.attention_bias_default))

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        shapes = super().layer_shapes(cfg)
        for name in UNLOADED_BIASES:
            del shapes[name]
        if not self.has_qkv_bias(cfg):
            for name in QKV_BIASES:
                del shapes[name]
        return shapes

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        required = super().required_layer_tensors(cfg)
        return required + list(QKV_BIASES) if self.has_qkv_bias(cfg) else required

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        if not self.free_head_dim:
            check_full_width_heads(ckpt.config, self.head_dim(ckpt.config), self.gguf_arch.name.lower())
        return super().tensors(ckpt)

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        n_sliding = sliding_layers(ckpt.config)
        if n_sliding:
            warnings.append(
                f"{n_sliding} layer(s) use sliding-window attention (window {ckpt.config.get('sliding_window')}), "
                f"which llama.cpp's {self.gguf_arch.name.lower()} architecture does not implement; "
                "outputs differ from transformers beyond the window"
            )


class Qwen3(Qwen2):
    """Qwen3: Qwen2 without default biases, plus per-head q/k RMS norms and a free ``head_dim``."""

    gguf_arch = gguf.MODEL_ARCH.QWEN3
    attention_bias_default = False
    free_head_dim = True
    QK_NORMS = ("self_attn.q_norm.weight", "self_attn.k_norm.weight")

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        head_dim = self.head_dim(cfg)
        return {**super().layer_shapes(cfg), **{name: (head_dim,) for name in self.QK_NORMS}}

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return super().required_layer_tensors(cfg) + list(self.QK_NORMS)
