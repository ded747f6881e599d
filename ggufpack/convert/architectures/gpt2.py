"""``GPT2LMHeadModel`` → GGUF architecture ``gpt2``.

GPT-2 is a decoder, but not Llama-shaped: learned position embeddings (``wpe``), LayerNorm with
biases, one fused q/k/v projection (``c_attn``), GELU, and its own config keys (``n_embd``,
``n_layer``, ``n_head``, ``n_positions``, ``n_inner``, ``layer_norm_epsilon``). Its linear layers are
``Conv1D`` modules, which store weights as ``(in, out)``, the transpose of ``nn.Linear``'s
``(out, in)`` that llama.cpp expects (``{n_embd, 3 n_embd}`` in ggml order for ``attn_qkv``): the four
``Conv1D`` weights are transposed. The head is tied to ``wte`` unless the config says otherwise;
llama.cpp then reuses ``token_embd`` as the output matrix.

llama.cpp's graph always scales attention by ``1/sqrt(head_dim)`` and applies GELU (its CPU backend
through a float16 table of the tanh form); configs that ask for anything else are refused.
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np

from ggufpack.convert.architectures.base import PlannedTensor, hparam, moves_values_only
from ggufpack.convert.architectures.decoder import DecoderArchitecture
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.errors import GGUFPackError, shown

#: the Conv1D weights, by suffix after ``h.N.``
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
#: activations llama.cpp's GELU computes, to its float16 table's precision (erf vs tanh form: under 5e-4)
_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu")


class GPT2(DecoderArchitecture):
    """OpenAI's GPT-2 layout, with or without the ``transformer.`` prefix of ``GPT2LMHeadModel``."""

    gguf_arch = gguf.MODEL_ARCH.GPT2
    prefix = "transformer."
    blocks = "h"
    #: the causal-mask buffers some checkpoints carry
    ignored_suffixes = (".attn.bias", ".attn.masked_bias")

    def block_count(self, cfg: dict[str, Any]) -> int:
        return int(hparam(cfg, "n_layer", "num_hidden_layers"))

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        # Checkpoints saved from GPT2Model (openai-community/gpt2 itself) have no "transformer." prefix.
        if not any(name.startswith(GPT2.prefix) for name in ckpt.tensors):
            self.prefix = ""
        return super().tensors(ckpt)

    # --- hyperparameters -------------------------------------------------------------------------

    def write_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        cfg = ckpt.config
        self._check_supported(cfg)
        hidden = hparam(cfg, "n_embd", "hidden_size")
        writer.add_block_count(self.block_count(cfg))
        writer.add_context_length(hparam(cfg, "n_positions", "n_ctx", "max_position_embeddings"))
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(self._n_inner(cfg))
        writer.add_head_count(hparam(cfg, "n_head", "num_attention_heads"))
        writer.add_layer_norm_eps(float(hparam(cfg, "layer_norm_epsilon", default=1e-5)))
        writer.add_vocab_size(hparam(cfg, "vocab_size"))

    @staticmethod
    def _n_inner(cfg: dict[str, Any]) -> int:
        return int(hparam(cfg, "n_inner", default=4 * hparam(cfg, "n_embd", "hidden_size")))

    @staticmethod
    def _check_supported(cfg: dict[str, Any]) -> None:
        if cfg.get("scale_attn_weights") is False or cfg.get("scale_attn_by_inverse_layer_idx"):
            raise GGUFPackError(
                "config.json: scale_attn_weights=false or scale_attn_by_inverse_layer_idx=true: llama.cpp's gpt2 "
                "graph always scales attention by 1/sqrt(head_dim), so this model cannot run there"
            )
        act = cfg.get("activation_function", "gelu_new")
        if act not in _GELU:
            raise GGUFPackError(f"config.json: activation_function {shown(act)} is not supported: llama.cpp's gpt2 "
                                f"graph computes GELU ({', '.join(_GELU)})")

    # --- tensors ---------------------------------------------------------------------------------

    def top_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden, vocab = hparam(cfg, "n_embd", "hidden_size"), hparam(cfg, "vocab_size")
        n_ctx = hparam(cfg, "n_positions", "n_ctx", "max_position_embeddings")
        return {
            self.prefix + "wte.weight": (vocab, hidden), self.prefix + "wpe.weight": (n_ctx, hidden),
            self.prefix + "ln_f.weight": (hidden,), self.prefix + "ln_f.bias": (hidden,),
            "lm_head.weight": (vocab, hidden),
        }

    def required_top_tensors(self, cfg: dict[str, Any]) -> list[str]:
        names = [self.prefix + n for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")]
        return names if self._tied(cfg) else [*names, "lm_head.weight"]

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden, ff = hparam(cfg, "n_embd", "hidden_size"), self._n_inner(cfg)
        return {  # HF's Conv1D shapes: (in, out)
            "ln_1.weight": (hidden,), "ln_1.bias": (hidden,), "ln_2.weight": (hidden,), "ln_2.bias": (hidden,),
            "attn.c_attn.weight": (hidden, 3 * hidden), "attn.c_attn.bias": (3 * hidden,),
            "attn.c_proj.weight": (hidden, hidden), "attn.c_proj.bias": (hidden,),
            "mlp.c_fc.weight": (hidden, ff), "mlp.c_fc.bias": (ff,),
            "mlp.c_proj.weight": (ff, hidden), "mlp.c_proj.bias": (hidden,),
        }

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return list(self.layer_shapes(cfg))  # llama.cpp requires every one, biases included

    @staticmethod
    def _tied(cfg: dict[str, Any]) -> bool:
        return bool(cfg.get("tie_word_embeddings", True))  # GPT2Config's default

    def skip(self, hf_name: str, cfg: dict[str, Any]) -> bool:
        return hf_name.endswith(self.ignored_suffixes) or (hf_name == "lm_head.weight" and self._tied(cfg))

    @moves_values_only
    def transform(self, hf_name: str, data: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
        return data.T if hf_name.endswith(_CONV1D) else data  # a view: the writer copies it out contiguous

    def gguf_shape(self, hf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape[::-1] if hf_name.endswith(_CONV1D) else shape
