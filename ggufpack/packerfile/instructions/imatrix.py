"""``IMATRIX [flags] <model.gguf> <calibration.txt> <out.imatrix>``: an importance matrix for QUANTIZE."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Instruction, LayerCommand
from .expansion import Expansion
from .flags import FROM, Flags, FlagSpec

_POSITIVE_INT_RE = re.compile(r"^[1-9]\d*$")


@dataclass(frozen=True)
class ImatrixCommand(LayerCommand):
    keyword: ClassVar[str] = "IMATRIX"
    model: str
    calibration: str
    dest: str
    source_from: str | None
    chunks: int | None
    ctx_size: int | None

    def arguments(self) -> dict[str, Any]:
        return {
            "model": self.model, "calibration": self.calibration, "dest": self.dest,
            "from": self.source_from, "chunks": self.chunks, "ctx_size": self.ctx_size,
        }

    @property
    def from_ref(self) -> str | None:
        return self.source_from


def parse_imatrix(ex: Expansion, flags: Flags) -> ImatrixCommand:
    node = ex.node
    values = ex.arguments()
    if len(values) != 3:
        raise ex.error("IMATRIX takes <model.gguf> <calibration.txt> <out.imatrix>")

    def positive(name: str) -> int | None:
        value = flags.string(name)
        if value is None:
            return None
        if not _POSITIVE_INT_RE.match(value):
            raise ex.error(f"--{name}={value!r} must be a positive integer", flags.position(name))
        return int(value)

    return ImatrixCommand(node.position, node.original, values[0], values[1], values[2], flags.lowered("from"),
                          positive("chunks"), positive("ctx-size"))


IMATRIX = Instruction(
    "IMATRIX", "compute the importance matrix of a GGUF model over a calibration text (for QUANTIZE --imatrix)",
    "IMATRIX [flags] <model.gguf> <calibration.txt> <out.imatrix>", ImatrixCommand, parse_imatrix,
    op="model:ImatrixOp", reads="stage",
    flags=(
        FROM,
        FlagSpec("chunks", "use at most N chunks of the text (default: all)", metavar="n"),
        FlagSpec("ctx-size", "tokens per chunk (default 512)", metavar="n"),
    ),
    examples=("IMATRIX --from=f16 /models/tiny.F16.gguf calibration.txt /models/tiny.imatrix",),
)
