"""``Qwen2MoeForCausalLM`` → GGUF ``qwen2moe`` and ``Qwen3MoeForCausalLM`` → GGUF ``qwen3moe``.

Attention is that of the dense :class:`~.qwen.Qwen2` / :class:`~.qwen.Qwen3`; the MLP of every layer
is a sparse block ``mlp.gate`` (router) + ``mlp.experts.E.{gate,up,down}_proj``, merged into
``ffn_{gate,up,down}_exps`` by :class:`~.moe.MoeDecoder`. Differences, checked against llama.cpp's
``src/models/qwen2moe.cpp`` / ``qwen3moe.cpp``:

- Qwen2-MoE adds a shared expert (``mlp.shared_expert.*`` → ``ffn_*_shexp``) scaled by
  ``sigmoid(mlp.shared_expert_gate)`` (→ ``ffn_gate_inp_shexp``), with its own width
  (``expert_shared_feed_forward_length``). Its q/k/v biases follow ``qkv_bias``.
- llama.cpp hard-codes the top-k renormalisation: never for qwen2moe, always for qwen3moe, so a
  checkpoint whose ``norm_topk_prob`` says otherwise is refused rather than silently miscomputed.
- llama.cpp makes every layer sparse: ``mlp_only_layers`` or a ``decoder_sparse_step`` that leaves
  dense layers is refused.
"""

from __future__ import annotations

from typing import Any

import gguf

from ggufpack.convert.architectures.base import PlannedTensor, hparam
from ggufpack.convert.architectures.moe import ExpertLayout, MoeDecoder
from ggufpack.convert.architectures.qwen import Qwen2, Qwen3
from ggufpack.convert.checkpoint import Checkpoint
from ggufpack.errors import GGUFPackError

SHARED_EXPERT = ("mlp.shared_expert.gate_proj.weight", "mlp.shared_expert.up_proj.weight",
                 "mlp.shared_expert.down_proj.weight", "mlp.shared_expert_gate.weight")


class QwenMoe(MoeDecoder):
    """What Qwen2-MoE and Qwen3-MoE share: the expert layout, its keys and the all-sparse check."""

    expert_layout = ExpertLayout(blocks=("mlp",), gate="gate_proj", up="up_proj", down="down_proj")

    def dense_layers(self, cfg: dict[str, Any]) -> list[int]:
        """The layers transformers builds with a dense MLP instead of experts."""
        step = int(cfg.get("decoder_sparse_step") or 1)
        dense_only = set(cfg.get("mlp_only_layers") or [])
        return [i for i in range(self.block_count(cfg)) if i in dense_only or (i + 1) % step]

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        super().write_extra_hparams(ckpt, writer, warnings)
        writer.add_expert_feed_forward_length(self.expert_ff(ckpt.config))

    def tensors(self, ckpt: Checkpoint) -> list[PlannedTensor]:
        dense = self.dense_layers(ckpt.config)
        if dense:
            raise GGUFPackError(
                f"config.json: layers {dense} have a dense MLP (mlp_only_layers / decoder_sparse_step), "
                f"but llama.cpp's "
                f"{self.gguf_arch.name.lower()} architecture makes every layer a mixture of experts"
            )
        return super().tensors(ckpt)


class Qwen2Moe(QwenMoe, Qwen2):
    """Qwen1.5-MoE, Qwen2-57B-A14B: routed experts plus a gated shared expert."""

    gguf_arch = gguf.MODEL_ARCH.QWEN2MOE
    renormalises_topk = False

    def has_qkv_bias(self, cfg: dict[str, Any]) -> bool:
        return bool(cfg.get("qkv_bias", True))

    def layer_shapes(self, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        hidden, shared = hparam(cfg, "hidden_size"), hparam(cfg, "shared_expert_intermediate_size")
        return {**super().layer_shapes(cfg), **dict(zip(SHARED_EXPERT, [(shared, hidden), (shared, hidden),
                                                                         (hidden, shared), (1, hidden)], strict=True))}

    def required_layer_tensors(self, cfg: dict[str, Any]) -> list[str]:
        return super().required_layer_tensors(cfg) + list(SHARED_EXPERT)

    def write_extra_hparams(self, ckpt: Checkpoint, writer: gguf.GGUFWriter, warnings: list[str]) -> None:
        super().write_extra_hparams(ckpt, writer, warnings)
        writer.add_expert_shared_feed_forward_length(hparam(ckpt.config, "shared_expert_intermediate_size"))


class Qwen3Moe(QwenMoe, Qwen3):
    """Qwen3-30B-A3B, Qwen3-235B-A22B: routed experts only, q/k norms, renormalised top-k."""

    gguf_arch = gguf.MODEL_ARCH.QWEN3MOE
    renormalises_topk = True
