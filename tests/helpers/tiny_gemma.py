"""Tiny random Gemma, Gemma 2 and Gemma 3 checkpoints with a Gemma-style SentencePiece tokenizer.

Made with transformers and a fixed seed. What the defaults exercise on purpose:

- ``head_dim`` 32 with 4 heads on a hidden size of 64: query width differs from the hidden size;
- Gemma 2/3 keep transformers' ``query_pre_attn_scalar`` default (256), unlike ``head_dim``, so the
  attention scale llama.cpp applies (1/sqrt(head_dim)) must be corrected by the converter;
- a sliding window of 8 tokens on alternating layers: prompts longer than 8 tokens cross it;
- Gemma 3's local layers with their own RoPE base (10 000) against 1 000 000 on global layers;
- every RMSNorm weight random (transformers initialises them to 0, i.e. a scale of 1), so that the
  ``1 + w`` offset is really checked;
- ``vocab_size`` 640 for a 600-piece tokenizer: the converter pads the token list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.tiny_spm import save_spm_tokenizer

TOKENIZER_SIZE = 600
VOCAB_SIZE = 640

BASE_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.25,  # spread-out logits make argmax comparisons meaningful
}

SLIDING = {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}

MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "gemma": {},
    "gemma2": SLIDING,
    "gemma3_text": {
        **SLIDING,
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
    },
}


def make_tiny_gemma(outdir: Path, model_type: str, *, seed: int = 0, config: dict[str, Any] | None = None,
                    multimodal: bool = False) -> Path:
    """Write a tiny ``model_type`` (``gemma``, ``gemma2``, ``gemma3_text``) checkpoint into ``outdir``.

    ``config`` overrides keys of the text config. ``multimodal`` (Gemma 3 only) wraps the text model
    in ``Gemma3ForConditionalGeneration`` with a one-layer vision tower, as the Gemma 3 4B+ releases are.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, Gemma3Config, Gemma3ForConditionalGeneration

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ids = save_spm_tokenizer(outdir, "gemma", TOKENIZER_SIZE)
    text = {**BASE_CONFIG, **MODEL_CONFIGS[model_type], **(config or {}),
            "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"]}
    torch.manual_seed(seed)
    if multimodal:
        cfg = Gemma3Config(
            text_config=text, mm_tokens_per_image=4,
            vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        )
        model = Gemma3ForConditionalGeneration(cfg).float().eval()
    else:
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **text)).float().eval()
    with torch.no_grad():  # RMSNorm weights start at 0 (scale 1 + 0): randomise them so the offset matters
        for name, param in model.named_parameters():
            if param.ndim == 1 and "norm" in name:
                param.copy_(torch.randn_like(param) * 0.3)
    model.save_pretrained(outdir, safe_serialization=True)
    return outdir


def ggml_gelu(x: Any) -> Any:
    """GELU as llama.cpp's CPU backend computes it in float32 (``GGML_GELU_FP16`` in ``ggml-cpu/vec.h``).

    The input is rounded to float16 and looked up in a table of float16 tanh-GELU values (inputs past
    ±10 are passed through or zeroed): up to 2^-11 relative error on every activation.
    """
    import torch

    table = torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()
    return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, table))


def hf_logits_both_gelus(model_dir: Path, ids: list[int]) -> tuple[Any, Any]:
    """transformers' float32 logits for ``ids``: as is, and with each MLP's GELU replaced by :func:`ggml_gelu`."""
    import torch
    from transformers import AutoModelForCausalLM

    class GgmlGelu(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ggml_gelu(x)

    model = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
    with torch.no_grad():
        plain = model(torch.tensor([ids])).logits[0].float().numpy()
        mlps = [m for m in model.modules() if hasattr(m, "act_fn") and hasattr(m, "gate_proj")]
        assert mlps, "no gated MLP found"
        for mlp in mlps:
            mlp.act_fn = GgmlGelu()
        emulated = model(torch.tensor([ids])).logits[0].float().numpy()
    return plain, emulated
