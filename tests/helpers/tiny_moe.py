"""Tiny random Mixtral, Qwen2-MoE and Qwen3-MoE checkpoints (4 experts, top-2), fixed seeds.

The models come from :func:`tests.helpers.tiny_qwen_phi.make_tiny_model` (the quickstart's
tokenizer, randomised norms and biases); only the expert settings live here. transformers 5 saves
the classic per-expert layout by default; :func:`resave` re-saves a checkpoint in its fused
``experts.gate_up_proj`` layout, which checkpoints written with ``save_original_format=False`` have.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.helpers.tiny_qwen_phi import make_tiny_model

#: model_type → the expert settings of its tiny model
MOE_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 48, "norm_topk_prob": False},
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "head_dim": 32,
                  "norm_topk_prob": True},
}


def make_tiny_moe(outdir: Path, model_type: str, *, seed: int = 0, config: dict[str, Any] | None = None) -> Path:
    """A tiny ``model_type`` MoE checkpoint in ``outdir``; ``config`` overrides the expert settings."""
    return make_tiny_model(outdir, model_type, seed=seed, config={**MOE_CONFIGS[model_type], **(config or {})})


def resave(src: Path, outdir: Path, *, fused: bool = False, dtype: str | None = None) -> Path:
    """A copy of checkpoint ``src``, with transformers 5's fused expert tensors if ``fused``, in ``dtype`` if given."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(src, outdir, ignore=shutil.ignore_patterns("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(src)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(outdir, safe_serialization=True, save_original_format=not fused)
    return outdir


def router_margin(model_dir: Path, ids: list[int]) -> float:
    """The smallest gap, over layers and positions, between the k-th and (k+1)-th router logit.

    When two experts score alike, float rounding alone can pick the other one: this says how far
    every routing decision of the prompt is from such a tie.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    k = model.config.num_experts_per_tok
    with torch.no_grad():
        logits = model(torch.tensor([ids]), output_router_logits=True).router_logits
    ranked = [layer.sort(dim=-1, descending=True).values for layer in logits]
    return min(float((r[:, k - 1] - r[:, k]).min()) for r in ranked)
