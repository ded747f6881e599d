"""``GemmaForCausalLM``, ``Gemma2ForCausalLM``, ``Gemma3ForCausalLM`` (and the text model of
``Gemma3ForConditionalGeneration``) → GGUF architectures ``gemma``, ``gemma2``, ``gemma3``.

What llama.cpp's Gemma graphs (``src/models/gemma*.cpp``) expect, on top of :class:`DecoderArchitecture`:

- **RMSNorm offset.** Gemma's RMSNorm scales by ``1 + w``; llama.cpp's by ``w``. Every norm weight
  gets 1 added: input, post-attention, final, Gemma 2/3's pre/post feed-forward norms and Gemma 3's
  per-head q/k norms.
- **No RoPE permute**: llama.cpp runs Gemma with NeoX-style RoPE, HF's rotate-half layout.
- **Embeddings** are scaled by sqrt(hidden_size) at run time by llama.cpp, as by transformers:
  nothing to do here.
- **Output head**: the ``gemma``/``gemma2`` graphs always reuse the token embeddings, so a separate
  ``lm_head`` is an error there; ``gemma3`` takes an ``output.weight`` when there is one.
- **Attention scale.** transformers scales scores by ``query_pre_attn_scalar ** -0.5`` (Gemma 2/3);
  llama.cpp hard-codes ``1/sqrt(head_dim)`` (``1/sqrt(hidden/heads)`` for the 27B layer counts) and
  reads no key for it. When they differ the ratio is folded into the queries: into ``q_proj`` for
  Gemma 2, into ``q_norm`` for Gemma 3 (its queries are normalised after the projection, so a
  projection scale would vanish). RoPE and soft-capping act after this scale, so the fold is exact.
- **Soft-capping**: Gemma 2's ``attn_logit_softcapping`` and ``final_logit_softcapping`` keys;
  llama.cpp's gemma2 graph always caps, so both must be set. Gemma 3: final cap only.
- **Sliding window**: ``sliding_window`` plus a per-layer ``sliding_window_pattern`` array from
  ``layer_types`` (transformers 5) or from ``sliding_window_pattern`` (4.x; Gemma 2: every other
  layer, starting with a local one).
- **Gemma 3 RoPE**: global layers use ``rope_theta`` (and linear scaling when configured), local
  layers ``rope.freq_base_swa`` from the sliding-attention RoPE parameters (4.x:
  ``rope_local_base_freq``), unscaled, as llama.cpp applies no scale to them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.architectures.decoder import DecoderArchitecture
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.errors import GGUFPackError, shown

#: activations llama.cpp's GELU (tanh approximation) reproduces
_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")
#: where Gemma 3 multimodal checkpoints keep the text model, and the name it gets here
_TEXT_PREFIXES = {"language_model.model.": "model.", "model.language_model.": "model.",
                  "language_model.lm_head.": "lm_head.", "lm_head.": "lm_head."}


class Gemma(DecoderArchitecture):
    """Gemma (1): Llama-shaped with the norm offset, tanh-GELU and tied embeddings."""

    gguf_arch = gguf.MODEL_ARCH.GEMMA
    #: whether llama.cpp's graph always reuses the token embeddings as the output head
    always_tied = True
    #: the layer count for which llama.cpp scales queries by 1/sqrt(hidden/heads) instead of head_dim
    wide_scale_layers: int | None = None
    #: the tensor that carries the query scale correction (see :meth:`query_scale`)
    query_scale_tensor = ".self_attn.q_proj."

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        cfg = ckpt.config
        act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in _TANH_GELU:
            warnings.append(f"activation {shown(act)}: llama.cpp's {self.gguf_arch.name.lower()} graph uses the tanh "
                            "approximation of GELU, so outputs differ slightly from transformers'")
        self.write_softcapping(cfg, writer)
        self.write_sliding_window(cfg, writer)

    def write_softcapping(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        """Soft-capping keys; Gemma 1 has none."""

    def write_sliding_window(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        """Sliding-window keys; Gemma 1 has none."""

    def skip(self, hf_name: str, cfg: dict[str, Any]) -> bool:
        if hf_name == "lm_head.weight" and self.always_tied:
            if not cfg.get("tie_word_embeddings", True):
                raise GGUFPackError(
                    f"config.json: untied lm_head, but llama.cpp's {self.gguf_arch.name.lower()} architecture "
                    "always uses the token embeddings as the output head"
                )
            return True
        return super().skip(hf_name, cfg)

    def transform(self, hf_name: str, data: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
        if hf_name.endswith("norm.weight"):
            data = data + np.float32(1.0)
        if self.query_scale_tensor in hf_name and self.query_scale(cfg) != 1.0:
            data = data * np.float32(self.query_scale(cfg))
        return data

    def query_scale(self, cfg: dict[str, Any]) -> float:
        """The factor folded into the queries: transformers' attention scale over llama.cpp's."""
        scalar = cfg.get("query_pre_attn_scalar")
        if scalar is None or self.wide_scale_layers is None:
            return 1.0
        if hparam(cfg, "num_hidden_layers") == self.wide_scale_layers:
            llama_cpp = hparam(cfg, "hidden_size") / hparam(cfg, "num_attention_heads")
        else:
            llama_cpp = self.head_dim(cfg)
        return math.sqrt(llama_cpp / float(scalar))


class Gemma2(Gemma):
    """Gemma 2: post-attention and pre/post feed-forward norms, soft-capping, alternating sliding window."""

    gguf_arch = gguf.MODEL_ARCH.GEMMA2
    wide_scale_layers = 46  # Gemma 2 27B
    #: 4.x configs without layer_types: every ``pattern``-th layer global, the others local
    default_swa_pattern = 2
    extra_layer_norms = ("pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight")

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden = hparam(cfg, "hidden_size")
        return {**super().layer_shapes(cfg), **{name: (hidden,) for name in self.extra_layer_norms}}

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return super().required_layer_tensors(cfg) + list(self.extra_layer_norms)

    def write_softcapping(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        # llama.cpp's gemma2 graph always caps (defaults 50 and 30): a config without a cap is an error
        writer.add_attn_logit_softcapping(float(hparam(cfg, "attn_logit_softcapping")))
        writer.add_final_logit_softcapping(float(hparam(cfg, "final_logit_softcapping")))

    def write_sliding_window(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        writer.add_sliding_window(int(hparam(cfg, "sliding_window")))
        writer.add_sliding_window_pattern(self.sliding_layers(cfg))

    def sliding_layers(self, cfg: dict[str, Any]) -> list[bool]:
        """Per layer: does it attend through the sliding window?"""
        n_layer = hparam(cfg, "num_hidden_layers")
        types = cfg.get("layer_types")
        if types is not None:
            if len(types) != n_layer:
                raise GGUFPackError(f"config.json: {len(types)} layer_types for {n_layer} layers")
            unknown = sorted(set(types) - {"sliding_attention", "full_attention"})
            if unknown:
                raise GGUFPackError(f"config.json: layer type {shown(unknown[0])} is not supported")
            return [t == "sliding_attention" for t in types]
        pattern = int(cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern")
                      or self.default_swa_pattern)
        return [(i + 1) % pattern != 0 for i in range(n_layer)]


class Gemma3(Gemma2):
    """Gemma 3 text: Gemma 2's layout plus per-head q/k norms, dual RoPE bases, optional soft-capping."""

    gguf_arch = gguf.MODEL_ARCH.GEMMA3
    always_tied = False  # gemma3 takes output.weight when there is one
    wide_scale_layers = 62  # Gemma 3 27B
    default_swa_pattern = 6
    query_scale_tensor = ".self_attn.q_norm."  # queries are normalised after q_proj: scale the norm

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        head = (self.head_dim(cfg),)
        return {**super().layer_shapes(cfg), "self_attn.q_norm.weight": head, "self_attn.k_norm.weight": head}

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return [*super().required_layer_tensors(cfg), "self_attn.q_norm.weight", "self_attn.k_norm.weight"]

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        text = text_checkpoint(ckpt)
        dropped = len(ckpt.tensors) - len(text.tensors)
        if dropped:
            warnings.append(f"{ckpt.architecture}: {dropped} vision tower and projector tensor(s) left out; "
                            "the GGUF holds the text model only")
        super().write_hparams(text, writer, warnings)

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        return super().tensors(text_checkpoint(ckpt))

    def write_softcapping(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        if cfg.get("attn_logit_softcapping") is not None:
            raise GGUFPackError("config.json: attn_logit_softcapping is set, but llama.cpp's gemma3 graph has none")
        if cfg.get("final_logit_softcapping") is not None:
            writer.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))

    def write_sliding_window(self, cfg: dict[str, Any], writer: gguf.GGUFWriter) -> None:
        if cfg.get("sliding_window") and any(self.sliding_layers(cfg)):  # else llama.cpp runs no window
            super().write_sliding_window(cfg, writer)
            writer.add_rope_freq_base_swa(self.local_rope_base(cfg))

    def local_rope_base(self, cfg: dict[str, Any]) -> float:
        """RoPE base of the sliding-window layers, which llama.cpp runs unscaled."""
        params = cfg.get("rope_parameters") or {}
        local = params.get("sliding_attention")
        if not isinstance(local, dict):
            return float(cfg.get("rope_local_base_freq", 10000.0))
        if (local.get("rope_type") or "default") != "default":
            raise GGUFPackError(f"config.json: rope scaling {shown(local['rope_type'])} on sliding-window layers is "
                                "not supported by llama.cpp's gemma3 graph")
        return float(local.get("rope_theta", 10000.0))


def text_checkpoint(ckpt: Checkpoint) -> Checkpoint:
    """The text model of a multimodal Gemma 3 checkpoint, named as ``Gemma3ForCausalLM`` names it.

    The config becomes ``text_config``; tensors under the language-model prefixes are renamed to
    ``model.``/``lm_head.``, and the vision tower and projector are left out. A text-only checkpoint
    is returned as it is.
    """
    text_cfg = ckpt.config.get("text_config")
    if not isinstance(text_cfg, dict):
        return ckpt
    config = {**text_cfg, "tie_word_embeddings": ckpt.config.get("tie_word_embeddings",
                                                                text_cfg.get("tie_word_embeddings", True))}
    tensors = {}
    for name, ref in ckpt.tensors.items():
        prefix = next((p for p in _TEXT_PREFIXES if name.startswith(p)), None)
        if prefix is not None:
            tensors[_TEXT_PREFIXES[prefix] + name[len(prefix):]] = ref
    if not tensors:
        raise GGUFPackError(f"{ckpt.directory}: no language-model tensors (language_model.model.* or "
                            "model.language_model.*) in this multimodal checkpoint")
    return replace(ckpt, config=config, tensors=tensors)
