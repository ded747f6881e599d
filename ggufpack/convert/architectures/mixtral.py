"""``MixtralForCausalLM`` → GGUF architecture ``llama`` with experts.

llama.cpp runs Mixtral as a Llama whose MLP is a sparse block (``expert_count`` > 0): attention is
Llama's (q/k permuted the same way), and each layer's eight (or however many) experts
``block_sparse_moe.experts.E.w1/w3/w2`` (gate/up/down) are merged into ``ffn_{gate,up,down}_exps``.
Its router is softmax then top-k with the chosen weights renormalised, as in transformers' Mixtral;
the experts' width is the config's ``intermediate_size`` (``feed_forward_length``).
"""

from __future__ import annotations

from typing import Any

from ggufpack.convert.architectures.base import hparam
from ggufpack.convert.architectures.llama import Llama
from ggufpack.convert.architectures.moe import ExpertLayout, MoeDecoder


class Mixtral(MoeDecoder, Llama):
    """Mixtral 8x7B / 8x22B and other Llama-shaped models with Mixtral's sparse block."""

    # transformers 5 renames block_sparse_moe to mlp in its fused layout
    expert_layout = ExpertLayout(blocks=("block_sparse_moe", "mlp"), gate="w1", up="w3", down="w2")
    renormalises_topk = True

    def expert_ff(self, cfg: dict[str, Any]) -> int:
        return int(hparam(cfg, "intermediate_size"))

    def config_renormalises_topk(self, cfg: dict[str, Any]) -> bool:
        return True  # transformers' Mixtral always renormalises; its config has no switch
