"""``CONVERT [flags] <src> <dest>``: a Hugging Face checkpoint or PEFT LoRA adapter directory → GGUF.

Its flags are ``--from`` and the Packerfile options of :class:`ggufpack.options.convert.ConvertOptions`,
checked by the same ``validated()`` as ``ggufpack convert`` and the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...options.convert import ConvertOptions
from .base import OptionsCommand, options_instruction


@dataclass(frozen=True)
class ConvertCommand(OptionsCommand):
    keyword: ClassVar[str] = "CONVERT"
    option_set: ClassVar[type] = ConvertOptions
    #: validated; ``base`` is a path in the source, as ``source`` is
    options: ConvertOptions


CONVERT = options_instruction(
    ConvertCommand, "convert a Hugging Face checkpoint (or a PEFT LoRA adapter, with its base) to GGUF",
    op="model:ConvertOp",
    examples=("CONVERT --from=context --type=F16 tiny-llama /models/tiny-llama.F16.gguf",
              "CONVERT --from=context --class=lora --base=tiny-llama my-adapter /adapters/my-adapter.gguf"),
)
