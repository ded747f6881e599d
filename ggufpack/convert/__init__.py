"""Hugging Face safetensors checkpoints → GGUF, with numpy only (no torch, no transformers).

``convert(src_dir, dest, out_type=...)`` is the entry point; see :mod:`ggufpack.convert.api`.
"""

from ggufpack.convert.api import ConvertResult, convert
from ggufpack.convert.architectures import supported_architectures
from ggufpack.convert.writer import AUTO, OUT_TYPES

OUTPUT_TYPES: tuple[str, ...] = (*OUT_TYPES, AUTO)

__all__ = ["OUTPUT_TYPES", "ConvertResult", "convert", "supported_architectures"]
