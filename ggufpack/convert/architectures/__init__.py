"""The architecture table: ``config.json``'s ``architectures[0]`` → the module that converts it.

Adding an architecture is one new module and one line here. Modules are imported on first use, so
converting a Llama never imports the BERT converter.
"""

from __future__ import annotations

import importlib

from ggufpack.convert.architectures.base import Architecture, PlannedTensor
from ggufpack.convert.checkpoint import Checkpoint, check_layer_count
from ggufpack.errors import GGUFPackError, shown

#: HF architecture name → "module:Class" under ggufpack.convert.architectures
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama:Llama",
    "MistralForCausalLM": "llama:Llama",
    "MixtralForCausalLM": "mixtral:Mixtral",
    "Qwen2ForCausalLM": "qwen:Qwen2",
    "Qwen3ForCausalLM": "qwen:Qwen3",
    "Qwen2MoeForCausalLM": "qwen_moe:Qwen2Moe",
    "Qwen3MoeForCausalLM": "qwen_moe:Qwen3Moe",
    "Phi3ForCausalLM": "phi3:Phi3",
    "GemmaForCausalLM": "gemma:Gemma",
    "Gemma2ForCausalLM": "gemma:Gemma2",
    "Gemma3ForCausalLM": "gemma:Gemma3",
    "Gemma3ForConditionalGeneration": "gemma:Gemma3",
    "GPT2LMHeadModel": "gpt2:GPT2",
    "BertModel": "bert:Bert",
    "BertForMaskedLM": "bert:Bert",
}


def supported_architectures() -> list[str]:
    """HF architecture names the converter handles, sorted."""
    return sorted(ARCHITECTURES)


def architecture_for(hf_arch: str) -> Architecture:
    """The converter for ``hf_arch``, or a GGUFPackError listing the supported ones."""
    target = ARCHITECTURES.get(hf_arch)
    if target is None:
        raise GGUFPackError(
            f"unsupported architecture {shown(hf_arch)}; supported: {', '.join(supported_architectures())}"
        )
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    factory: type[Architecture] = getattr(module, class_name)
    return factory()


def converter_for(ckpt: Checkpoint) -> Architecture:
    """The converter for a checkpoint, once its config is known to describe sizes its tensors can back."""
    arch = architecture_for(ckpt.architecture)
    check_layer_count(ckpt)
    return arch


__all__ = ["ARCHITECTURES", "Architecture", "PlannedTensor", "architecture_for", "converter_for",
           "supported_architectures"]
