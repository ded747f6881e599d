"""``QUANTIZE [flags] <src> <dest>``: llama.cpp's quantizer on a GGUF file of the stage (or ``--from``).

Its flags are ``--from`` and the Packerfile options of :class:`ggufpack.options.quantize.QuantizeOptions`,
checked by the same ``validated()`` as ``ggufpack quantize`` and the library; whether ``--imatrix``
names a file is known only when the stage is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...options.quantize import QuantizeOptions
from .base import OptionsCommand, options_instruction


@dataclass(frozen=True)
class QuantizeCommand(OptionsCommand):
    keyword: ClassVar[str] = "QUANTIZE"
    option_set: ClassVar[type] = QuantizeOptions
    #: validated, canonical type names; ``imatrix`` is a path in the image
    options: QuantizeOptions


QUANTIZE = options_instruction(
    QuantizeCommand, "quantize a GGUF model with llama.cpp (in process by default, or --backend of the build)",
    op="model:QuantizeOp",
    examples=("QUANTIZE --from=f16 --type=Q4_K_M /models/tiny.F16.gguf /models/tiny.Q4_K_M.gguf",
              "QUANTIZE --type=IQ2_XS --imatrix=/models/tiny.imatrix --tensor-type=attn_v=q8_0 "
              "/models/tiny.F16.gguf /models/tiny.IQ2_XS.gguf"),
)
