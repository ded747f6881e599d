"""Tiny PEFT LoRA adapters for converter tests, and the two sides of a LoRA parity check.

peft initialises ``lora_B`` to zero, so a freshly made adapter changes nothing and a test on it
could not fail; :func:`make_tiny_lora` overwrites every LoRA factor with seeded random values large
enough to move the logits by O(1) before saving. The reference side merges the *saved* adapter
into the base model with ``merge_and_unload`` (what the GGUF adapter must reproduce); the llama.cpp
side loads the converted base model with the converted adapter through ``lora_path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_tiny_lora(
    base_dir: Path, outdir: Path, *, r: int = 4, lora_alpha: float = 8, target_modules: Sequence[str] = LLAMA_TARGETS,
    seed: int = 0, std: float = 0.15, **config: Any,
) -> Path:
    """A PEFT LoRA adapter for the model in ``base_dir``, saved (safetensors) in ``outdir``.

    ``config`` goes to ``peft.LoraConfig`` (``use_rslora``, ``rank_pattern``, ``modules_to_save``...).
    Every ``lora_A``/``lora_B`` (and embedding factor) gets N(0, ``std``²) values from ``seed``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=list(target_modules), **config)
    model = get_peft_model(base, lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    model.save_pretrained(outdir)
    return Path(outdir)


def merged_logits(base_dir: Path, adapter_dir: Path, ids: list[int]) -> np.ndarray:
    """transformers' float32 logits of the base model with the saved adapter merged in."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_cpp_lora_logits(base_gguf: Path, adapter_gguf: Path, ids: list[int], scale: float = 1.0) -> np.ndarray:
    """llama.cpp's logits for every position of ``ids``, with the GGUF LoRA applied at ``scale``.

    Same settings as ``tinymodels.llama_cpp_model`` (float32 KV cache, logits for all positions).
    """
    import llama_cpp

    llm = llama_cpp.Llama(
        str(base_gguf), n_ctx=max(64, len(ids) + 8), logits_all=True, verbose=False, n_threads=2, seed=0,
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, lora_path=str(adapter_gguf),
        lora_scale=scale,
    )
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)
