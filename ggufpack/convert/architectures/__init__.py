"""The architecture table: ``config.json``'s ``architectures[0]`` → the module that converts it.

Adding an architecture is one new module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from ggufpack.convert.architectures.base import Architecture, PlannedTensor
from ggufpack.convert.architectures.llama import Llama
from ggufpack.errors import GGUFPackError

ARCHITECTURES: dict[str, Callable[[], Architecture]] = {
    "LlamaForCausalLM": Llama,
    "MistralForCausalLM": Llama,
}


def supported_architectures() -> list[str]:
    """HF architecture names the converter handles, sorted."""
    return sorted(ARCHITECTURES)


def architecture_for(hf_arch: str) -> Architecture:
    """The converter for ``hf_arch``, or a GGUFPackError listing the supported ones."""
    factory = ARCHITECTURES.get(hf_arch)
    if factory is None:
        raise GGUFPackError(
            f"unsupported architecture {hf_arch!r}; supported: {', '.join(supported_architectures())}"
        )
    return factory()


__all__ = ["ARCHITECTURES", "Architecture", "PlannedTensor", "architecture_for", "supported_architectures"]
